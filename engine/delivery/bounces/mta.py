"""Reasons stated by the notifying MTA's own boilerplate, before the generic wording rules.

Each MTA words its own local failures in fixed sentences taken from its source code: qmail says
"Sorry, I wasn't able to establish an SMTP connection", Exim "retry timeout exceeded", Domino "not
listed in Domino Directory". Those sentences are unambiguous once the MTA is known, so they are
matched first. Families whose sentences are too generic to be trusted everywhere ("Unable to")
are only consulted when the notification is recognisably from that MTA.
"""

from __future__ import annotations

import re

from engine.delivery.bounces.model import Finding
from engine.delivery.bounces.status import status_reason

_FAMILY: dict[str, re.Pattern[str]] = {
    "exim": re.compile(r"(?i)created automatically by mail delivery software|\bexim\b|this address has been ignored"),
    "qmail": re.compile(r"(?im)qmail|^failure notice$|below this line is a copy of the message"),
    "imail": re.compile(r"(?i)^undeliverable mail\b"),
    "fml": re.compile(r"(?i)\(\S+ ML\)|fml"),
    # OpenSMTPD (smtpd/bounce.c NOTICE_INTRO), or its notification subject.
    "opensmtpd": re.compile(r"(?im)this is the mailer-daemon, please do not reply to this e-?mail"
                            r"|^delivery status notification"),
    # Trend Micro InterScan Messaging Security Suite: its sender name, or its fixed subjects.
    "interscan": re.compile(
        r"(?im)^\"?interscan|^mail could not be delivered$|メッセージを配信できません。|メール配信に失敗しました"
    ),
}

# (family or "", reason, phrases); earlier rows win. Lower-case phrases match case-insensitively.
_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # Exim (deliver.c, route.c, transports/*.c, parser.c)
    ("exim", "hostunknown", ("all host address lookups failed permanently",
                             "all relevant mx records point to non-existent hosts", "unrouteable address")),
    ("exim", "mailboxfull", ("mailbox is full", "error: quota exceed")),
    ("exim", "notaccept", ("an mx or srv record indicated no smtp service",
                           "no host found for existing smtp connection")),
    ("exim", "syntaxerror", ("angle-brackets nested too deep", 'expected word or "<"',
                             "domain missing in source-routed address", "malformed address:")),
    ("exim", "systemerror", ("delivery to file forbidden", "delivery to pipe forbidden", "local delivery failed",
                             "lmtp error after ")),
    ("exim", "contenterror", ('too many "received" headers',)),
    ("exim", "userunknown", ("user not found",)),
    ("exim", "expired", ("retry timeout exceeded", "no action is required on your part",
                         "retry time not reached for any host after a long failure period",
                         "all hosts have been failing for a long time and were last tried", "delay reason: ",
                         "has been frozen", "was frozen on arrival by ")),
    ("exim", "mailererror", ("pipe to |",)),
    # qmail and its clones (qmail-remote.c, qmail-send.c, qmail-ldap)
    ("qmail", "hostunknown", ("sorry, i couldn't find any host ",)),
    ("qmail", "mailboxfull", ("disk quota exceeded",)),
    ("qmail", "mesgtoobig", ("message size exceeds fixed maximum message size:",)),
    ("qmail", "networkerror", ("sorry, i wasn't able to establish an smtp connection",
                               "sorry. although i'm listed as a best-preference mx or a for that host")),
    ("qmail", "notaccept", ("sorry, i couldn't find a mail exchanger or ip address",)),
    ("qmail", "systemfull", ("requested action not taken: mailbox unavailable (not enough free space)",)),
    ("qmail", "userunknown", ("no mailbox here by that name",)),
    ("qmail", "exceedlimit", ("the message exeeded the maximum size the user accepts",)),
    ("qmail", "suspend", ("mailaddress is administrativly disabled", "mailaddress is administrativley disabled",
                          "mailaddress is administratively disabled", "mailaddress is administrativeley disabled")),
    ("qmail", "systemerror", ("bad interpreter: No such file or directory", "system error", "Unable to",
                              "automatic homedir creator crashed", "illegal value in ldap attribute",
                              "ldap attribute is not given but mandatory", "unable to contact ldap server",
                              "temporary failure in ldap lookup", "timeout while performing search on ldap server",
                              "permanent error while executing qmail-forward")),
    ("qmail", "expired", ("this message has been in the queue too long.",)),
    # Courier (module.esmtp/esmtpclient.c)
    ("", "hostunknown", ("no such domain.",)),
    ("", "systemerror", ("this domain's dns violates rfc 1035.",)),
    ("", "networkerror", ("dns lookup failed.",)),
    # HCL Domino / Notes
    ("", "filtered", ("cannot route mail to user",)),
    ("", "systemerror", ("several matches found in domino directory",)),
    ("", "userunknown", ("not listed in domino directory", "not listed in public name & address book",
                         "no se encuentra en el directorio de domino", "non répertorié dans l'annuaire domino",
                         "domino ディレクトリには見つかりません", "ディレクトリのリストにありません")),
    ("", "networkerror", ("message has exceeded maximum hop count",)),
    # Microsoft Exchange 2003 (MSEXCH:IMS codes)
    ("", "userunknown", ("(000c05a6)",)),
    ("", "filtered", ("(000c0595)",)),
    ("", "systemerror", ("(00010256)", "(000d06b5)")),
    ("", "networkerror", ("(00120270)",)),
    ("", "contenterror", ("(00050311)", "(000502cc)")),
    ("", "securityerror", ("(000b0981)",)),
    # Google Groups
    ("", "rejected", ("you may not have permission to post messages to the group",)),
    # Progress iMail Server
    ("imail", "hostunknown", ("unknown host",)),
    ("imail", "userunknown", ("unknown user", "invalid final delivery userid")),
    ("imail", "mailboxfull", ("user mailbox exceeds allowed size",)),
    ("imail", "virusdetected", ("requested action not taken: virus detected",)),
    ("imail", "spamdetected", ("blacklisted url in message",)),
    ("imail", "expired", ("delivery failed ",)),
    # OpenSMTPD (smtpd/mta.c, smtpd/queue.c)
    ("", "expired", ("envelope expired",)),
    ("", "securityerror", ("could not retrieve credentials",)),
    # "Invalid domain name" is also what a server answers to a bad HELO name (the sender's fault),
    # so it names the recipient's domain only in OpenSMTPD's own notice.
    ("opensmtpd", "hostunknown", ("invalid domain name",)),
    ("", "networkerror", ("address family mismatch on destination mxs", "all routes to destination blocked",
                          "bad dns lookup error code", "could not retrieve source address",
                          "network error on destination mxs", "no valid route to remote mx",
                          "no valid route to destination", "temporary failure in mx lookup")),
    ("", "notaccept", ("destination seem to reject all mails", "no mx found for domain",
                       "no mx found for destination")),
    # Gmail's own failures (no remote answer)
    ("", "expired", ("dns error: could not contact dns servers",
                     "delivery to the following recipient has been delayed",
                     "the recipient server did not accept our requests to connect")),
    ("", "hostunknown", ("dns error: domain name not found", "dns error: dns server returned answer with no data")),
    # Zoho
    ("", "expired", ("host not reachable",)),
    # DragonFly Mail Agent (dma.c, net.c)
    ("", "expired", ("could not deliver for the last ",)),
    ("", "hostunknown", ("dns lookup failure: host ",)),
    # au (KDDI) EZweb
    ("", "expired", ("your message was not delivered within ",)),
    ("", "mailboxfull", ("the user(s) account is temporarily over quota",)),
    ("", "suspend", ("the user(s) account is disabled.", "the user(s) account is temporarily limited.")),
    ("", "onhold", ("each of the following recipients was rejected by a remote mail server",)),
    # fml mailing list manager (refused posts to a list)
    ("fml", "rejected", (" are not member", "not member article from ", "reject mail ",
                         "spam mail from a spammer is rejected", " header may cause mail loop", "reject spammers:",
                         "you are not a member of this mailing list")),
    ("fml", "notcompliantrfc", ("duplicated message-id",)),
    ("fml", "securityerror", ("security alert",)),
    ("fml", "systemerror", ("fml system error message", "loop alert: ", "loop back warning",
                            "warning: unix from loop", " has detected a loop condition so that")),
    # Trend Micro InterScan MSS: its own sentence for a recipient the next hop refused by name
    ("interscan", "userunknown", ("unable to deliver message to <",)),
    # BIGLOBE (and the Japanese cable providers on its platform): the two "Non-delivered
    # information" sentences. "User unknown" there is the recipient's domain filter, as au's is.
    ("", "filtered", ("mail delivery failed... user unknown",)),
    ("", "mailboxfull", ("the number of messages in recipient's mailbox exceeded the local limit",)),
    # Verizon MMS gateway
    ("", "userunknown", ("550 - requested action not taken: no such user here", "no valid recipients for this mm")),
)

# Sentences that tell which SMTP command the remote server was answering.
_COMMAND_PHRASES: tuple[tuple[str, str], ...] = (
    (" but greeting failed", "CONN"),
    (" but my name was rejected", "EHLO"),
    (" but sender was rejected", "MAIL"),
    (" does not like recipient", "RCPT"),
    (" failed on data command", "DATA"),
    (" failed after i sent the message", "DATA"),
    ("refused to talk to me:", "HELO"),
    ("in reply to rcpt to command", "RCPT"),
    ("in reply to mail from command", "MAIL"),
    ("in reply to end of data command", "DATA"),
    ("in reply to data command", "DATA"),
)


def command_from_wording(text: str) -> str:
    """The SMTP command a notification sentence attributes the refusal to, or ``""``."""
    lowered = text.lower()
    for phrase, command in _COMMAND_PHRASES:
        if phrase in lowered:
            return command
    return ""


# Gmail's "(state N)" suffix: the SMTP stage its client was in, and what that means.
_GMAIL_STATES: dict[str, tuple[str, str]] = {
    "6": ("MAIL", "failedstarttls"), "8": ("AUTH", "systemerror"), "9": ("AUTH", "failedstarttls"),
    "12": ("AUTH", "norelaying"), "13": ("EHLO", "blocked"), "14": ("RCPT", "userunknown"),
    "15": ("DATA", "filtered"), "17": ("DATA", "filtered"), "18": ("DATA", "filtered"),
}
_GMAIL_STATE_RE = re.compile(r" \(state (\d+)\)")


def families_of(subject: str, text: str, sender: str = "") -> frozenset[str]:
    """Which MTA families the notification's wording reveals (computed once per message).

    ``sender`` is the notification's ``From`` header: some MTAs sign only there ("InterScan MSS").
    """
    context = f"{sender}\n{subject}\n{text}"
    found = {name for name, pattern in _FAMILY.items() if name != "imail" and pattern.search(context)}
    if _FAMILY["imail"].search(subject):
        found.add("imail")
    # Google Groups' refusal to post lists exactly four possible causes as bullets.
    if "groups.google.com" in text.lower() and sum(1 for line in text.split("\n")
                                                   if line.lstrip().startswith("* ")) == 4:
        found.add("googlegroups")
    return frozenset(found)


def _gmail_state(f: Finding) -> str:
    """Gmail's client state at the failure; a specific status code then names the reason."""
    match = _GMAIL_STATE_RE.search(f.diagnosis)
    if not match or match.group(1) not in _GMAIL_STATES:
        return ""
    command, reason = _GMAIL_STATES[match.group(1)]
    f.command = command
    if f.status and ".0" not in f.status and status_reason(f.status):
        return status_reason(f.status)
    return reason


def mta_reason(f: Finding, families: frozenset[str]) -> str:
    """The reason the notifying MTA's own wording names for this recipient, or ``""``."""
    diagnosis = f.diagnosis.lower()
    if "qmail" in families and "does not like recipient." in diagnosis and \
            "this message has been in the queue too long." in diagnosis:
        return "onhold"
    if ("exim" in families or "qmail" in families) and f.command in ("EHLO", "HELO"):
        return "blocked"
    if "exim" in families and f.command == "MAIL" and "smtp error from remote" in diagnosis:
        return "onhold"
    if "googlegroups" in families:
        return "rejected"
    state = _gmail_state(f)
    if state:
        return state
    for family, reason, phrases in _RULES:
        if family and family not in families:
            continue
        # A phrase written with capitals is the MTA's exact wording and is matched as such.
        if any((p in f.diagnosis) if p != p.lower() else (p in diagnosis) for p in phrases):
            return reason
    return ""


__all__ = ["command_from_wording", "families_of", "mta_reason"]
