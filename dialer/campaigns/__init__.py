"""Campaigns and where their calls leave: campaign settings and lifecycle (`service`), trunks
and their limits (`trunks`), operator settings checked before they reach the database
(`validation`), and callee-local calling windows (`calling_window`)."""
