"""`@endpoint`: a resource method written once, blocking on `Lava`, awaited on `AsyncLava`.

A resource method only builds its `APIRequest`. Decorated with `@endpoint`, it is called
through its resource's transport: on a resource of `Lava` (`Resource[SyncTransport]`) the
call returns the result, on a resource of `AsyncLava` (`Resource[AsyncTransport]`) it returns
a coroutine of the result. The overloads of `Endpoint.__get__` say so to the type checker, so
`lava.wallet.balance()` is a `Wallet` and `await async_lava.wallet.balance()` is a `Wallet`,
with the method's own parameters in both — one definition, no copy per transport.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from lava_mcp.client.request import APIRequest
from lava_mcp.client.transports import AsyncTransport, SyncTransport

Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")
TransportT = TypeVar("TransportT", bound=SyncTransport | AsyncTransport)


class Resource(Generic[TransportT]):
    """A group of the REST API's routes (`spend_keys`, `wallet` …), bound to one transport."""

    def __init__(self, transport: TransportT) -> None:
        self._transport = transport


class Endpoint(Generic[Parameters, Result]):
    """A resource method that builds an `APIRequest`; reading it off a resource gives the
    method that sends it."""

    def __init__(self, build: Callable[Concatenate[Any, Parameters], APIRequest[Result]]) -> None:
        self._build = build
        signature = inspect.signature(build)
        # What help() and IDEs that read signatures show: the method's own parameters.
        self._signature = signature.replace(
            parameters=list(signature.parameters.values())[1:], return_annotation=inspect.Signature.empty
        )
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, resource: None, owner: type[object]) -> Self: ...

    @overload
    def __get__(
        self, resource: Resource[SyncTransport], owner: type[object]
    ) -> Callable[Parameters, Result]: ...

    @overload
    def __get__(
        self, resource: Resource[AsyncTransport], owner: type[object]
    ) -> Callable[Parameters, Coroutine[Any, Any, Result]]: ...

    def __get__(self, resource: Resource[Any] | None, owner: type[object]) -> object:
        if resource is None:
            return self
        build, transport = self._build, resource._transport

        def call(*args: Parameters.args, **kwargs: Parameters.kwargs) -> object:
            return transport.send(build(resource, *args, **kwargs))

        functools.update_wrapper(call, build, updated=())
        del call.__wrapped__  # type: ignore[attr-defined]  # the signature below, not build's
        call.__signature__ = self._signature  # type: ignore[attr-defined]
        return call


def endpoint(
    build: Callable[Concatenate[Any, Parameters], APIRequest[Result]],
) -> Endpoint[Parameters, Result]:
    """Decorate a resource method that returns the `APIRequest` of its call."""
    return Endpoint(build)
