"""The traffic room: simulated users that send mail through the ETSI API, and recorded traces
of external clients replayed in virtual time."""
