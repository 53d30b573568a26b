// Follows a results or receipts page as the server streams it (server-sent
// events). Without this file the page refreshes itself instead (<noscript>).
(function () {
  "use strict";
  var region = document.getElementById("results");
  var live = document.getElementById("live");
  if (!region || !window.EventSource) { return; }
  var url = region.getAttribute("data-stream");
  if (!url) { return; }
  var source = new EventSource(url);
  source.addEventListener("update", function (event) {
    var update = JSON.parse(event.data);
    if (update.reload) {
      source.close();
      window.location.reload();
      return;
    }
    // Keep keyboard focus on the same control across the update.
    var focused = document.activeElement && document.activeElement.id;
    region.innerHTML = update.html;
    if (focused) {
      var again = document.getElementById(focused);
      if (again) { again.focus(); }
    }
    if (live && update.status) { live.textContent = update.status; }
    if (update.done) { source.close(); region.setAttribute("data-stream", ""); }
  });
  source.addEventListener("error", function () {
    // The stream ended or broke: fall back to reloading the page.
    if (source.readyState === EventSource.CLOSED && region.getAttribute("data-stream")) {
      window.setTimeout(function () { window.location.reload(); }, 2000);
    }
  });
}());
