"""Ready-made adapters: sites join onecert by configuration, and the demo federation."""
