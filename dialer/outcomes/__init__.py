"""How calls end: the outcome and who ended the call as a pure function of the facts
(`rules`), what happens to the contact next (`retry`), facts and closes written to attempts
(`facts`), the listener (`listener`) and its batched writes (`callstore`), reconciliation
against the PBX (`reconcile`), and what the dialer did as timeline rows (`timeline`)."""
