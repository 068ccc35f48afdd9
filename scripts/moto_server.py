"""moto's server as the tests and the bench run it: `python scripts/moto_server.py -H HOST -p PORT`.

The same server as `moto_server`, with one correction where moto 5.1 differs from AWS in a way
that changes what mlobs is measured doing:

- IAM GetAccountAuthorizationDetails: moto ignores `MaxItems` and `Marker` and answers every role
  of the account in one response with `IsTruncated: false`. IAM answers pages of at most
  `MaxItems` (default 100, at most 1,000) and a `Marker` for the next one. mlobs asks for pages of
  250 roles (`aws::iam::ROLES_PAGE`). Unpaged, 1,000 pipelines' roles came back as one 1.8 MB
  response, held twice while it was parsed (hyper's read buffers and the SDK's collected body):
  about 3.8 MiB of the operator's peak heap in the bench (heaptrack), which IAM would never send,
  and a pagination loop that never ran against moto. Here the roles are paged as IAM pages them:
  the Marker is the index of the next role in moto's listing order, which is stable between
  calls.
"""

import sys

from moto.iam.responses import IamResponse
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

if __name__ == "__main__":
    sys.exit(main())
