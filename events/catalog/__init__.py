"""The event catalog: importing this package registers every event type of the contract."""

from __future__ import annotations

from events.catalog.campaign import *  # noqa: F403
from events.catalog.contact import *  # noqa: F403
from events.catalog.email import *  # noqa: F403
from events.catalog.enrollment import *  # noqa: F403
from events.catalog.sender import *  # noqa: F403
from events.catalog.workspace import *  # noqa: F403
