from datetime import UTC, datetime

from onecert.sdk import Binding, BindingKind, Provider, UnbindRequest, UnbindResult

USERS = {  # account ref -> [phone number, nickname, when the number was bound]
    "u1": ["+8613800138000", "zhangsan", datetime(2021, 3, 1, tzinfo=UTC)],
    "u2": ["+8613800138000", "lisi", datetime(2014, 6, 9, tzinfo=UTC)],
}

provider = Provider(provider_id="example-forum", name="Example Forum", category="forum")


@provider.list_bindings
async def list_bindings(msisdn: str) -> list[Binding]:
    return [
        Binding(account_ref=ref, kind=BindingKind.LOGIN, bound_at=since, display_name=nick)
        for ref, (phone, nick, since) in USERS.items()
        if phone == msisdn
    ]


@provider.unbind
async def unbind(request: UnbindRequest) -> UnbindResult:
    user = USERS.get(request.account_ref)
    if user is None or user[0] != request.msisdn:
        return UnbindResult.rejected("no such account")
    user[0] = None  # the number is detached; the account stays
    return UnbindResult.done()


if __name__ == "__main__":
    provider.main()
