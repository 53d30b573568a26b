"""A portal's lookup: stream a citizen's merged list, left-behind accounts first."""

import asyncio
import sys
from pathlib import Path

from onecert.sdk import ClientTLS
from onecert.sdk.client import Attribution, GatewayClient, Result, Summary


async def main(gateway: str, keys: Path, assertion: str) -> None:
    tls = ClientTLS(keys / "ca.pem", keys / "client-portal.pem", keys / "client-portal.key.pem")
    async with GatewayClient(gateway, tls=tls) as client:
        async for update in client.lookup(assertion, timeout=10):
            if isinstance(update, Result):
                for account in update.accounts:  # the gateway sends LEFT_BEHIND first
                    flag = "!!" if account.attribution is Attribution.LEFT_BEHIND else "  "
                    print(flag, update.provider_name, update.msisdn, account.display_name_masked)
                if update.previous_holder_count:
                    print("  ", update.provider_name, update.previous_holder_count, "previous")
            elif isinstance(update, Summary):
                print(f"{update.total.answered}/{update.total.asked} providers answered")


if __name__ == "__main__":
    gateway, keys, assertion_file = sys.argv[1:4]
    asyncio.run(main(gateway, Path(keys), Path(assertion_file).read_text().strip()))
