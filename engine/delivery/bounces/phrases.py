"""Error-message phrases that name a bounce reason, for the recipient-side and transient reasons.

Mail servers word the same refusal in hundreds of ways; these lists hold the wordings seen in the
wild (lower case, matched as substrings of the lower-cased diagnostic text). ``*_SEQ`` entries are
ordered fragments that must appear in that order with anything in between ("mailbox" ... "full").
The sender-side reasons (blocks, spam, policy) live in :mod:`engine.delivery.bounces.phrases_block`.
The wordings were collected from real bounces by the Sisimai project (BSD 2-Clause licence, like
the corpus in shared/corpus), whose reading of bounces is the reference here.
"""

from __future__ import annotations

Phrases = tuple[str, ...]
Sequences = tuple[tuple[str, ...], ...]

USERUNKNOWN: Phrases = (
    "#5.1.1 bad address", "550 address invalid", "5.1.0 address rejected.", "address does not exist",
    "address not present in directory", "address unknown", "can't accept user", "does not exist.",
    "destination addresses were unknown", "destination server rejected recipients",
    "email address does not exist", "email address could not be found", "invalid address",
    "invalid mailbox", "invalid recipient", "is not a known user", "is not a valid mailbox",
    "is not an active address at this host", "mailbox does not exist", "mailbox invalid",
    "mailbox is inactive", "mailbox is unavailable", "mailbox not present", "mailbox not found",
    "mailbox unavaiable", "nessun utente simile in questo indirizzo", "no account by that name here",
    "no existe dicha persona", "no existe ese usuario ", "no mail box available for this user",
    "no mailbox by that name is currently available", "no mailbox found", "no such address here",
    "no such mailbox", "no such person at this address", "no such recipient", "no such user",
    "no thank you rejected: account unavailable", "no valid recipients, bye",
    "not a valid recipient", "not a valid user here", "not a local address", "not email addresses",
    "recipient address rejected. (in reply to rcpt to command)",
    "recipient address rejected: access denied", "recipient address rejected: invalid user",
    "recipient address rejected: invalid-recipient", "recipient address rejected: unknown user",
    "recipient address rejected: userunknown", "recipient does not exist",
    "recipient is not accepted", "recipient is not local", "recipient not exist",
    "recipient not found", "recipient not ok", "recipient refuses to accept your mail",
    "recipient unknown", "requested action not taken: mailbox unavailable",
    "resolver.adr.recipient notfound", "sorry, user unknown", "sorry, badrcptto",
    "sorry, no mailbox here by that name", "sorry, your envelope recipient has been denied",
    "that domain or user isn't in my list of allowed rcpthosts",
    "the email account that you tried to reach does not exist",
    "the following recipients was undeliverable", "the user's email name is not found",
    "there is no one at this address", "this address no longer accepts mail",
    "this email address is wrong or no longer valid", "this recipient is in my badrecipientto list",
    "this recipient is not in my validrcptto list", "this spectator does not exist",
    "unknown mailbox", "unknown recipient", "unknown user", "user does not exist",
    "user missing home directory", "user not active", "user not exist", "user not found",
    "user not known", "user unknown", "utilisateur inconnu !",
    "vdeliver: invalid or unknown virtual user",
    "weil die adresse nicht gefunden wurde oder keine e-mails empfangen kann",
    "your envelope recipient is in my badrcptto list",
)
USERUNKNOWN_SEQ: Sequences = (
    ("<", "> not found"), ("<", ">... blocked by "), ("account ", " does not exist at the organization"),
    ("adresse d au moins un destinataire invalide. invalid recipient.", "416"),
    ("adresse d au moins un destinataire invalide. invalid recipient.", "418"),
    ("bad", "recipient"), ("mailbox ", "does not exist"), ("mailbox ", "unavailable or access denied"),
    ("no ", " in name directory"), ("non", "existent user"), ("rcpt <", " does not exist"),
    ("rcpt (", "t exist "), ("recipient ", " was not found in"),
    ("recipient address rejected: user ", "  does not exist"),
    ("recipient address rejected: user unknown in ", "  table"),
    ("said: 550", "5.1.1 ", " user unknown "), ("this user doesn't have a ", " account"),
    ("unknown e", "mail address"), ("unknown local", "part"), ("user ", " was not found"),
    ("user ", " does not exist"), ("user (", ") unknown"),
)

HOSTUNKNOWN: Phrases = (
    "domain does not exist", "domain is not reachable", "domain must exist",
    "host or domain name not found", "host unknown", "host unreachable",
    "mail domain mentioned in email address is unknown", "name or service not known",
    "no such domain", "recipient address rejected: unknown domain name",
    "recipient domain must exist", "the account or domain may not exist", "unknown host",
    "unroutable address", "unrouteable address",
)
HOSTUNKNOWN_SEQ: Sequences = (("553 ", " does not exist"),)

MAILBOXFULL: Phrases = (
    "452 insufficient disk space", "account disabled temporarly for exceeding receiving limits",
    "boite du destinataire pleine", "exceeded storage allocation", "full mailbox",
    "mailbox exceeds allowed size", "mailbox size limit exceeded",
    "mailbox would exceed maximum allowed storage", "mailfolder is full", "no space left on device",
    "not sufficient disk space", "quota violation for", "too much mail data",
    "user has exceeded quota, bouncing mail", "user has too many messages on the server",
    "user's space has been used up",
)
MAILBOXFULL_SEQ: Sequences = (
    ("account is ", " quota"), ("disk", "quota"), ("enough ", " space"), ("mailbox ", "exceeded", " limit"),
    ("mailbox ", "full"), ("mailbox ", "quota"), ("maildir ", "quota"), ("over ", "quota"),
    ("quota ", "exceeded"),
)

SUSPEND: Phrases = (
    " is currently suspended", " temporary locked", "archived recipient", "boite du destinataire archivee",
    "email account that you tried to reach is disabled", "has been suspended", "inactive account",
    "invalid/inactive user", "is a deactivated mailbox", "is unavailable: user is terminated",
    "mailbox currently suspended", "mailbox disabled", "mailbox is frozen",
    "mailbox unavailable or access denied", "recipient rejected: temporarily inactive",
    "recipient suspend the service", "the email account that you tried to reach is inactive",
    "this account has been disabled or discontinued", "this account has been temporarily suspended",
    "this address no longer accepts mail", "this mailbox is disabled", "user or domain is disabled",
    "user suspended", "vdelivermail: account is locked email bounced",
)

HASMOVED: Phrases = (" has been replaced by ",)

FILTERED: Phrases = (
    "account is protected by", "bounced address", "has restricted sms e-mail", "is not accepting any mail",
    "message filtered", "message rejected due to user rules", "not found recipient account",
    "recipient id refuse to receive mail", "recipient is only accepting mail from specific email addresses",
    "refused due to recipient preferences", "user not found", "user refuses to receive this mail",
    "user reject", "you have been blocked by the recipient",
)

NOTACCEPT: Phrases = (
    "does not accept mail (nullmx)", "host/domain does not accept mail", "host does not accept mail",
    "mail receiving disabled", "name server: .: host not found", "no mx record found for domain=",
    "no route for current request", "smtp protocol returned a permanent error",
)

EXPIRED: Phrases = (
    "connection timed out", "could not find a gateway for", "delivery attempts will continue to be",
    "delivery expired", "delivery time expired", "failed to deliver to domain ", "giving up on",
    "have been failing for a long time", "has been delayed", "it has not been collected after",
    "message expired after sitting in queue for", "message expired, cannot connect to remote server",
    "message expired, connection refulsed", "message timed out",
    "retry time not reached for any host after a long failure period", "server did not respond",
    "this message has been in the queue too long", "unable to deliver message after multiple retries",
    "was not reachable within the allowed queue period", "your message could not be delivered for more than",
)
EXPIRED_SEQ: Sequences = (("could not be delivered for", " days"),)

NETWORKERROR: Phrases = (
    "could not connect and send the mail to", "dns records for the destination computer could not be found",
    "hop count exceeded - possible mail loop", "host is unreachable", "host name lookup failure",
    "host not found, try again", "mail forwarding loop for ", "malformed name server reply",
    "malformed or unexpected name server reply", "maximum forwarding loop count exceeded",
    "message looping", "message probably in a routing loop", "no route to host", "too many hops",
    "unable to resolve route ", "unrouteable mail domain",
)

SYSTEMERROR: Phrases = (
    "aliasing/forwarding loop broken", "can't create user output file", "could not load drd for domain",
    "internal error reading data", "internal server error: operation now in progress",
    "interrupted system call", "it encountered an error while being processed",
    "it would create a mail loop", "local configuration error", "local error in processing",
    "loop was found in the mail exchanger", "loops back to myself", "mail system configuration error",
    "queue file write error", "recipient deferred because there is no mdb",
    "remote server is misconfigured", "server configuration error", "service currently unavailable",
    "system config error", "temporary local problem", "timeout waiting for input", "transaction failed ",
)
SYSTEMERROR_SEQ: Sequences = (("unable to connect ", "daemon"),)

SYSTEMFULL: Phrases = ("mail system full", "requested mail action aborted: exceeded storage allocation")

TOOMANYCONN: Phrases = (
    "all available ips are at maximum connection limit", "connection rate limit exceeded",
    "exceeds per-domain connection limit for", "has exceeded the max emails per hour ",
    "throttling failure: daily message quota exceeded", "throttling failure: maximum sending rate exceeded",
    "too many connections", "too many concurrent smtp connections", "too many errors from your ip",
    "too many recipients", "too many smtp sessions for this host", "trop de connexions, ",
    "we have already made numerous attempts to deliver this message",
)

SPEEDING: Phrases = (
    "mail sent from your ip address has been temporarily rate limited", "please try again slower",
    "receiving mail at a rate that prevents additional messages from being delivered",
)

EXCEEDLIMIT: Phrases = ("message header size exceeds limit", "message too large")

MESGTOOBIG: Phrases = (
    "exceeded maximum inbound message size", "exceeded the maximum incoming message size",
    "line limit exceeded", "max message size exceeded", "message file too big",
    "message length exceeds administrative limit", "message size exceeds fixed limit",
    "message size exceeds fixed maximum message size", "message size exceeds maximum value",
    "message too big", "message too large for this ", "size limit", "taille limite du message atteinte",
)

MAILERERROR: Phrases = (
    " || exit ", "procmail: ", "bin/procmail", "bin/maidrop", "command failed: ", "command died with status ",
    "command output:", "mailer error", "pipe to |/", "x-unix; ",
)

VACATION: Phrases = (
    "i am away on vacation", "i am away until", "i am out of the office", "i will be traveling for work on",
)
