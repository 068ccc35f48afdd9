"""moto's server as the tests and the bench run it: `python scripts/moto_server.py -H HOST -p PORT`.

The same server as `moto_server`, with two corrections where moto 5.1 differs from AWS in a way
that changes what mlobs is measured doing. moto ignores the page size of two listings mlobs
reads for all pipelines at once, and answers everything in one response:

- IAM GetAccountAuthorizationDetails: moto ignores `MaxItems` and `Marker` and answers every role
  of the account in one response with `IsTruncated: false`. IAM answers pages of at most
  `MaxItems` (default 100, at most 1,000) and a `Marker` for the next one. mlobs asks for pages of
  250 roles (`aws::iam::ROLES_PAGE`). Unpaged, 1,000 pipelines' roles came back as one 1.8 MB
  response, held twice while it was parsed (hyper's read buffers and the SDK's collected body):
  about 3.8 MiB of the operator's peak heap in the bench (heaptrack), which IAM would never send,
  and a pagination loop that never ran against moto. Here the roles are paged as IAM pages them:
  the Marker is the index of the next role in moto's listing order, which is stable between
  calls.
- KMS ListAliases: moto ignores `Limit` and `Marker` (every alias, `Truncated: false`). KMS
  answers pages of at most `Limit` (default 50, at most 100) with `NextMarker`; mlobs asks for
  100 (`aws::kms`), so 1,000 pipelines' aliases are 10 pages, not one.
"""

import json
import sys

from moto.iam.responses import IamResponse
from moto.kms.responses import KmsResponse
from moto.server import main

# IAM's documented default and maximum of MaxItems.
DEFAULT_MAX_ITEMS = 100
MAX_ITEMS = 1000

_unpaged = IamResponse.get_account_authorization_details


def _paged(self):
    result = _unpaged(self)
    body = result.result if hasattr(result, "result") else result
    try:
        max_items = int(self._get_param("MaxItems") or DEFAULT_MAX_ITEMS)
        start = int(self._get_param("Marker") or 0)
    except ValueError:
        return result
    max_items = max(1, min(max_items, MAX_ITEMS))
    roles = list(body.get("RoleDetailList") or [])
    # Users, groups and policies are left as moto lists them: mlobs asks for roles only.
    page = roles[start : start + max_items]
    body["RoleDetailList"] = page
    if start + max_items < len(roles):
        body["IsTruncated"] = True
        body["Marker"] = str(start + max_items)
    return result


IamResponse.get_account_authorization_details = _paged

# KMS ListAliases' documented default and maximum of Limit.
ALIASES_DEFAULT_LIMIT = 50
ALIASES_MAX_LIMIT = 100

_unpaged_aliases = KmsResponse.list_aliases


def _paged_aliases(self):
    body = json.loads(_unpaged_aliases(self))
    try:
        limit = int(self._get_param("Limit") or ALIASES_DEFAULT_LIMIT)
        start = int(self._get_param("Marker") or 0)
    except ValueError:
        return json.dumps(body)
    limit = max(1, min(limit, ALIASES_MAX_LIMIT))
    aliases = body.get("Aliases") or []
    body["Aliases"] = aliases[start : start + limit]
    body["Truncated"] = start + limit < len(aliases)
    if body["Truncated"]:
        body["NextMarker"] = str(start + limit)
    return json.dumps(body)


KmsResponse.list_aliases = _paged_aliases

if __name__ == "__main__":
    sys.exit(main())
