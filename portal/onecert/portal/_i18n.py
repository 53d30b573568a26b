"""The portal's words, in Simplified Chinese (the default) and English.

Plain words a citizen can act on: never a status code, never "breaker open".
Each message is a :meth:`str.format` template; ``{name}`` and the like are
filled in by the page, already escaped by Jinja2.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Translator", "translator"]

DEFAULT_LANGUAGE = "zh"
LANGUAGES = ("zh", "en")

_ZH: dict[str, str] = {
    "service": "号码和账号查询",
    "service_long": "一证通查：我名下的号码和绑定的账号",
    "skip": "跳到主要内容",
    "language": "语言",
    "switch_to": "English",
    "switch_lang": "en",
    "sign_in": "登录",
    "sign_out": "退出",
    "dev_banner": "开发模式：这里的登录只是演示，不核验真实身份。所有人名和号码都是虚构的。",
    "footer": "查询只用于您本人。我们不保存您的查询结果；退出后，本页的内容会被清除。",
    # Start page
    "start_title": "查看哪些账号绑定了您的手机号码",
    "start_lead": "手机号码注销后会分配给别人。如果您的账号还绑定着旧号码，新机主可能用短信验证码登录您的账号。",
    "start_what": "我们会问所有运营商和网站：",
    "start_what_1": "您名下现在和以前的号码；",
    "start_what_2": "每个号码绑定的账号；",
    "start_what_3": "哪些账号还绑定在您已经不用的号码上。",
    "start_then": "您可以直接解除绑定，并拿到每个网站的回执。",
    "start_button": "开始查询",
    "start_signed_out": "请先登录。登录时需要核验您的身份。",
    "cancel_link": "准备注销一个号码？先处理上面的账号",
    "receipts_link": "查看解绑回执",
    # Sign-in
    "signin_title": "登录",
    "signin_dev_lead": "开发用的身份步骤：选择一位虚构的居民。正式环境中，这一步由身份认证服务完成。",
    "signin_dev_choose": "以谁的身份登录",
    "signin_continue": "继续",
    "signin_oidc_lead": "您将转到身份认证服务核验身份，然后回到这里。",
    "signin_failed": "登录没有完成。请再试一次。",
    "session_ended": "您已经很久没有操作，为了安全已经退出。请重新登录。",
    "signed_out": "您已退出。",
    # Results
    "results_title": "查询结果",
    "results_waiting": "正在询问运营商和网站……结果会陆续显示在这里。",
    "results_progress": "已收到 {done} 个回答，共 {total} 个。",
    "results_done": "查询完成：收到 {answered} 个回答，共问了 {asked} 次。",
    "routed_out": "另有 {count} 个网站没有被询问：它们登记的号码清单显示没有这个号码。",
    "results_refresh": "本页每隔几秒自动刷新，直到所有结果到齐。",
    "results_failed": "这次查询没有完成：{reason}",
    "results_again": "重新查询",
    "numbers_heading": "您名下的号码",
    "number_current": "正在使用",
    "number_former": "以前用过，{until} 起已不属于您",
    "number_from": "正在使用，自 {since} 起",
    "left_heading": "需要马上处理：留在旧号码上的账号",
    "left_warning": "这些账号还绑定着您已经不用的号码。现在拥有这个号码的人，可能可以用短信验证码登录这些账号。请解除绑定，或到该网站换绑到您现在的号码。",
    "left_heading_calm": "旧号码上的账号",
    "left_found": "发现 {count} 个留在旧号码上的账号，请先处理。",
    "left_none": "没有找到留在旧号码上的账号。",
    "mine_heading": "您自己的账号",
    "mine_lead": "这些账号绑定在您正在使用的号码上。",
    "mine_none": "没有找到其他账号。",
    "previous_heading": "以前机主的账号",
    "previous_lead": "您现在的号码以前属于别人。下面这些网站上还有以前机主的账号绑定着这个号码。我们只显示数量，不显示别人的账号。释放号码后，您就可以用这个号码在这些网站注册。",
    "previous_count": "{provider}：{count} 个以前机主的账号，号码 {number}",
    "release": "释放我的号码",
    "providers_heading": "各网站的情况",
    "unbind": "解除绑定",
    "bound_since": "绑定于 {date}",
    "on_number": "号码 {number}",
    "kind_login": "登录",
    "kind_payment": "支付",
    "kind_recovery": "找回密码",
    "kind_contact": "联系方式",
    "kind_other": "其他",
    "not_unbindable": "这个账号需要您到该网站自己处理。",
    "asked_already": "已申请解除，见回执。",
    "status_answered": "已回答",
    "answered_all": "已回答：{names}。",
    "status_answered_none": "已回答：没有账号",
    "status_timed_out": "这次没有及时回答。您在那里可能有账号，请过几分钟再查一次。",
    "status_failed": "暂时联系不上。您在那里可能有账号，请过一会儿再查一次。",
    "status_skipped": "暂时联系不上，这次没有询问它。请过一会儿再查一次。",
    "status_waiting": "还在等待回答……",
    "carrier_missing": "运营商 {carrier} 没有回答，您在那里的号码这次可能没有列出。请稍后再查一次。",
    # Unbind and release
    "confirm_unbind_title": "确认解除绑定",
    "confirm_unbind_lead": "解除后，{provider} 上的账号 {account} 不再绑定号码 {number}。账号本身不会被删除。",
    "confirm_unbind_left": "这个号码已经不属于您。解除后，现在拥有它的人就不能再用短信验证码登录这个账号。",
    "confirm_release_title": "确认释放号码",
    "confirm_release_lead": "{provider} 会把号码 {number} 从 {count} 个以前机主的账号上解除。之后您可以用这个号码在 {provider} 注册。",
    "confirm_yes_unbind": "确认解除绑定",
    "confirm_yes_release": "确认释放",
    "back": "返回",
    "item_gone": "这个操作已经失效（可能已超时）。请重新查询。",
    # Receipts
    "receipts_title": "解绑回执",
    "receipts_none": "您还没有申请解除绑定。",
    "receipts_lead": "每个网站处理完后会给出回执。本页会自动更新。",
    "receipt_pending": "已提交，正在等待 {provider} 处理。",
    "receipt_done": "已完成：{provider} 已解除绑定（{when}）。",
    "receipt_rejected": "{provider} 拒绝了：{reason}",
    "receipt_failed": "没有成功：{provider} 在期限内没有处理。您可以到该网站自己解除绑定。",
    "receipt_unknown": "暂时查不到这张回执的状态，请稍后再看。",
    "receipt_release": "释放号码 {number}",
    "receipt_unbind": "解除 {account} 与号码 {number} 的绑定",
    "receipt_no_reason": "没有说明原因",
    # Before cancelling a number
    "cancel_title": "注销号码之前",
    "cancel_lead": "注销号码前，先把绑定在这个号码上的账号解除或换绑。否则号码分配给别人后，对方可能登录您的账号。",
    "cancel_choose": "您准备注销哪个号码？",
    "cancel_check": "查看这个号码上的账号",
    "cancel_need_lookup": "请先完成一次查询，我们才能列出您的号码。",
    "cancel_no_numbers": "没有找到您正在使用的号码。",
    "cancel_number_title": "号码 {number} 上的账号",
    "cancel_todo": "注销前还要处理 {count} 项。",
    "cancel_clear": "这个号码上没有找到需要处理的账号。您可以去运营商办理注销。",
    "cancel_unknown": "这些网站没有回答，无法确认：{providers}。注销前请再查一次。",
    "cancel_step_unbind": "逐个解除绑定，或到网站上换绑到新号码；",
    "cancel_step_receipts": "在回执页确认每个网站都已完成；",
    "cancel_step_carrier": "然后再去运营商注销号码。",
    # Errors
    "csrf_title": "请求被拒绝",
    "csrf_body": "这个表单已经失效。请回到上一页，刷新后再试。",
    "not_found": "找不到这个页面。",
    "error_title": "出了点问题",
    "error_unavailable": "查询服务暂时不可用。请过几分钟再试。",
    "error_busy": "现在查询的人很多。请过一会儿再试。",
    "error_identity": "无法确认您的身份。请重新登录。",
    "error_generic": "请求没有完成。请再试一次。",
    "error_rejected": "这个操作不能完成：它不属于您，或已经过期。请重新查询。",
    "home": "回到首页",
}

_EN: dict[str, str] = {
    "service": "Numbers and accounts",
    "service_long": "One-ID lookup: the numbers in my name and the accounts bound to them",
    "skip": "Skip to main content",
    "language": "Language",
    "switch_to": "中文",
    "switch_lang": "zh",
    "sign_in": "Sign in",
    "sign_out": "Sign out",
    "dev_banner": "Development mode: signing in here is a demonstration and checks no real "
    "identity. Every name and number is made up.",
    "footer": "This lookup is for you alone. We do not keep your results; signing out clears "
    "this page.",
    "start_title": "See which accounts are bound to your phone numbers",
    "start_lead": "A cancelled phone number is given to someone else. If an account of yours "
    "is still bound to an old number, its new holder may sign in to it with an SMS code.",
    "start_what": "We ask every carrier and website for:",
    "start_what_1": "the numbers in your name, now and before;",
    "start_what_2": "the accounts bound to each number;",
    "start_what_3": "which accounts are still bound to numbers you no longer have.",
    "start_then": "You can unbind them here and get a receipt from each website.",
    "start_button": "Start the lookup",
    "start_signed_out": "Sign in first. Signing in checks who you are.",
    "cancel_link": "About to cancel a number? Deal with its accounts first",
    "receipts_link": "See your unbinding receipts",
    "signin_title": "Sign in",
    "signin_dev_lead": "Development identity step: choose a made-up resident. In production "
    "the identity service does this step.",
    "signin_dev_choose": "Sign in as",
    "signin_continue": "Continue",
    "signin_oidc_lead": "You will go to the identity service to prove who you are, then "
    "come back here.",
    "signin_failed": "Signing in did not finish. Please try again.",
    "session_ended": "You were signed out because nothing happened for a while. Please sign "
    "in again.",
    "signed_out": "You are signed out.",
    "results_title": "Your results",
    "results_waiting": "Asking carriers and websites... results appear here as they arrive.",
    "results_progress": "{done} of {total} answers received.",
    "results_done": "Finished: {answered} answers to {asked} questions.",
    "routed_out": "{count} more websites were not asked: the list of numbers they registered "
    "shows they do not have this number.",
    "results_refresh": "This page refreshes every few seconds until every answer is in.",
    "results_failed": "The lookup did not finish: {reason}",
    "results_again": "Look up again",
    "numbers_heading": "Numbers in your name",
    "number_current": "in use",
    "number_former": "used before; not yours since {until}",
    "number_from": "in use since {since}",
    "left_heading": "Act now: accounts left on an old number",
    "left_warning": "These accounts are still bound to a number you no longer have. "
    "Someone who now has this number may be able to sign in to this account with an SMS "
    "code. Unbind them, or move them to your current number at the website.",
    "left_heading_calm": "Accounts on old numbers",
    "left_found": "{count} account(s) left on an old number: deal with them first.",
    "left_none": "No account was found left on an old number.",
    "mine_heading": "Your own accounts",
    "mine_lead": "These accounts are bound to a number you use now.",
    "mine_none": "No other accounts were found.",
    "previous_heading": "Previous holders' accounts",
    "previous_lead": "Your current number belonged to someone else before. These websites "
    "still have their accounts bound to it. We show only how many, never someone else's "
    "account. Release your number and you can register with it there.",
    "previous_count": "{provider}: {count} account(s) of a previous holder on {number}",
    "release": "Release my number",
    "providers_heading": "Each website",
    "unbind": "Unbind",
    "bound_since": "bound {date}",
    "on_number": "number {number}",
    "kind_login": "sign-in",
    "kind_payment": "payment",
    "kind_recovery": "password recovery",
    "kind_contact": "contact",
    "kind_other": "other",
    "not_unbindable": "You need to change this one at the website yourself.",
    "asked_already": "Unbinding asked for: see the receipt.",
    "status_answered": "answered",
    "answered_all": "Answered: {names}.",
    "status_answered_none": "answered: no accounts",
    "status_timed_out": "did not answer in time. You may have an account there: look up "
    "again in a few minutes.",
    "status_failed": "cannot be reached right now. You may have an account there: look up "
    "again later.",
    "status_skipped": "cannot be reached right now, so it was not asked. Look up again later.",
    "status_waiting": "waiting for an answer...",
    "carrier_missing": "The carrier {carrier} did not answer: your numbers there may be "
    "missing. Look up again later.",
    "confirm_unbind_title": "Unbind this account?",
    "confirm_unbind_lead": "{provider} will detach the number {number} from the account "
    "{account}. The account itself is not deleted.",
    "confirm_unbind_left": "This number is no longer yours. Once unbound, whoever has it now "
    "can no longer sign in to this account with an SMS code.",
    "confirm_release_title": "Release your number?",
    "confirm_release_lead": "{provider} will detach {number} from {count} account(s) of a "
    "previous holder. You can then register with this number at {provider}.",
    "confirm_yes_unbind": "Yes, unbind it",
    "confirm_yes_release": "Yes, release it",
    "back": "Back",
    "item_gone": "This action is no longer valid (it may have expired). Look up again.",
    "receipts_title": "Unbinding receipts",
    "receipts_none": "You have not asked to unbind anything yet.",
    "receipts_lead": "Each website gives a receipt once it has acted. This page updates itself.",
    "receipt_pending": "Sent; waiting for {provider}.",
    "receipt_done": "Done: {provider} unbound it ({when}).",
    "receipt_rejected": "{provider} refused: {reason}",
    "receipt_failed": "Not done: {provider} did not act in time. You can unbind it at the "
    "website yourself.",
    "receipt_unknown": "This receipt cannot be read right now; look again later.",
    "receipt_release": "Release of the number {number}",
    "receipt_unbind": "Unbind {account} from {number}",
    "receipt_no_reason": "no reason given",
    "cancel_title": "Before you cancel a number",
    "cancel_lead": "Before you cancel a number, unbind or move every account bound to it. "
    "Otherwise whoever gets the number next may sign in to your accounts.",
    "cancel_choose": "Which number are you about to cancel?",
    "cancel_check": "See the accounts on this number",
    "cancel_need_lookup": "Finish a lookup first, so we can list your numbers.",
    "cancel_no_numbers": "No number in use was found in your name.",
    "cancel_number_title": "Accounts on {number}",
    "cancel_todo": "{count} things to deal with before you cancel.",
    "cancel_clear": "No account to deal with was found on this number. You can cancel it "
    "with your carrier.",
    "cancel_unknown": "These websites did not answer, so we cannot be sure: {providers}. "
    "Look up again before you cancel.",
    "cancel_step_unbind": "unbind each account, or move it to a new number at the website;",
    "cancel_step_receipts": "check on the receipts page that every website has done it;",
    "cancel_step_carrier": "then cancel the number with your carrier.",
    "csrf_title": "Request refused",
    "csrf_body": "This form is no longer valid. Go back, refresh the page and try again.",
    "not_found": "Page not found.",
    "error_title": "Something went wrong",
    "error_unavailable": "The lookup service is unavailable right now. Try again in a few minutes.",
    "error_busy": "Many people are looking up right now. Try again in a little while.",
    "error_identity": "We could not confirm who you are. Please sign in again.",
    "error_generic": "The request did not finish. Please try again.",
    "error_rejected": "This cannot be done: it is not yours, or it has expired. Look up again.",
    "home": "Back to the start",
}

_CATALOGUES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"zh": MappingProxyType(_ZH), "en": MappingProxyType(_EN)}
)


class Translator:
    """The words of one language: ``t("key", name=...)``."""

    def __init__(self, language: str) -> None:
        self.language = language if language in _CATALOGUES else DEFAULT_LANGUAGE
        self._messages = _CATALOGUES[self.language]

    @property
    def html_lang(self) -> str:
        """The value of ``<html lang>``."""
        return "zh-Hans" if self.language == "zh" else "en"

    def __call__(self, key: str, /, **values: object) -> str:
        text = self._messages[key]
        return text.format(**values) if values else text


def translator(language: str | None) -> Translator:
    """The translator for ``language``, Chinese when unknown or absent."""
    return Translator(language or DEFAULT_LANGUAGE)
