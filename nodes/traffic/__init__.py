"""The traffic room: simulated users that send mail through the ETSI API, and recorded traces
of external clients replayed in virtual time.

Its public surface is ``__all__``; other rooms import only these names, from this package.
"""

from nodes.traffic.sae import (
                               DirectTransport,
                               Flow,
                               HttpTransport,
                               MailArrived,
                               MailAudit,
                               SendMail,
                               SimulatedSAE,
                               Transport,
)
from nodes.traffic.trace import (
                               OUTAGE_METHOD,
                               SIMULATED_HEADER,
                               Replayer,
                               TraceEntry,
                               TraceWriter,
                               load_trace,
                               recorder_hook,
)

__all__ = [
    "DirectTransport", "Flow", "HttpTransport", "MailArrived", "MailAudit", "Replayer",
    "SIMULATED_HEADER", "SendMail", "SimulatedSAE", "TraceEntry", "TraceWriter", "Transport",
    "load_trace", "recorder_hook", "OUTAGE_METHOD",
]
