"""Consent per customer and purpose, and what a read for a purpose may show.

`records` reads consents from a customer's events; `basis` decides whether a purpose has a
lawful basis for one customer and which fields a read for it must mask (pure functions);
`service` records consents; `reads` applies the masks to the read paths.
"""
