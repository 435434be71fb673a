"""Where the sandbox's order and trade ids start.

The sandbox keeps its book in memory, so a restart begins again; a real exchange never reuses an
id, and botconsole stores ids it has seen (unique per account). Starting from the startup time in
milliseconds (times 1000) keeps every id of a later run above every id of an earlier one.
"""

import time

ID_BASE = int(time.time() * 1000) * 1000
