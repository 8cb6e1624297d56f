"""Communication: channels, templates, campaigns, scenarios (issue 7)."""
