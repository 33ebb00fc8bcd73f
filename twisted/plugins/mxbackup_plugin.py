from twisted.application.service import ServiceMaker

mxbackup = ServiceMaker(
    "mxbackup",
    "mxbackup.tap",
    "A backup MX: queue mail for routed domains, hand it back.",
    "mxbackup",
)
