"""`dialer demo`: a campaign dialled end to end on this machine (`run`), with one contact per
simulated callee behaviour (`contacts`)."""
