"""What every command shares: the shared options' values, the streams, the exit-code epilog.

Standard library and click only: `wsconn --help` and completion import this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import click

from wsconn.errors import UsageError, exit_code_table
from wsconn.limits import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from wsconn.streams import Streams

if TYPE_CHECKING:
    from wsconn.calls import Settings

EXIT_EPILOG = "\n\b\nExit codes:\n" + exit_code_table()


class Options(NamedTuple):
    """The options every command shares; given before or after the subcommand."""

    endpoint: str | None = None
    api_id: str | None = None
    stage: str | None = None
    region: str | None = None
    profile: str | None = None
    output: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    ca_bundle: str | None = None
    verbose: int = 0
    quiet: bool = False
    dry_run: bool = False

    def merged(self, values: dict[str, Any]) -> Options:
        """These options overridden by the ones given (not None, not 0) in `values`."""
        given = {k: v for k, v in values.items() if k in self._fields and v is not None}
        given["verbose"] = self.verbose + (values.get("verbose") or 0)
        merged = self._replace(**given)
        if merged.verbose and merged.quiet:
            raise UsageError("-q/--quiet and -v/--verbose contradict each other: give one")
        return merged

    def settings(self) -> Settings:
        from wsconn.calls import Settings

        return Settings(
            self.endpoint,
            self.api_id,
            self.stage,
            self.region,
            self.profile,
            self.timeout,
            self.retries,
            self.ca_bundle,
        )


def streams_of(ctx: click.Context) -> Streams:
    streams = ctx.meta.get("wsconn.streams")
    return streams if isinstance(streams, Streams) else Streams.from_sys()


def checked_region(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--region's callback: a region name, or a usage error."""
    from wsconn.endpoint import check_region

    return None if value is None else check_region(value, "--region")
