"""Reading outcomes: queries over the report views (`queries`) and the live campaign view
(`watch`)."""
