"""What the BundlePusher promises its readers beyond the files (layout.py).

The user table (`users.jsonl`, one UserRecord per line) and the properties the
BundlePusher sets on its PushedModel artifact (read by the run summary, `movrec metrics`
and the HTML report).
"""

from typing import Dict, List, TypedDict, Union


class UserRecord(TypedDict):
  user_id: str
  features: Dict[str, Union[int, str]]  # raw demographic features present in the data
  rated: List[str]  # movie ids, newest first (a movie rated twice: its latest rating)
  rated_at: List[int]  # unix seconds of each, aligned with `rated`
  last_timestamp: int  # the user's newest rating (the default query time)


# PushedModel custom properties.
PUSHED = "pushed"  # 1 when this execution published (or found) a bundle, 0 when it refused
PUSHED_DESTINATION = "pushed_destination"  # the version directory
PUSHED_VERSION = "pushed_version"
NOT_PUSHED_REASON = "not_pushed_reason"  # which blessing was missing, and why
