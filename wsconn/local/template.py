"""A SAM / CloudFormation template → the App `wsconn local` runs, and what `--list` shows.

Reads the WebSocket API a developer already deploys (`AWS::ApiGatewayV2::Api` with its routes,
integrations, route responses, authorizer and stage, and the functions behind them); the
intrinsic functions that wire them together are resolved by cfn.py, nowhere else. Pure: no
sockets, no processes; the command line hands in the environment, parameters and endpoint it
was given.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from wsconn.errors import ConfigError
from wsconn.local.app import (
    DEFAULT_HANDLER_TIMEOUT,
    LOCAL_ACCOUNT,
    LOCAL_API_ID,
    App,
    Authorizer,
    Function,
    LambdaTarget,
    PythonTarget,
    Route,
)
from wsconn.local.cfn import (
    API,
    AUTHORIZER,
    FUNCTIONS,
    INTEGRATION,
    NO_VALUE,
    ROUTE,
    ROUTE_RESPONSE,
    SAM_FUNCTION,
    STAGE,
    Resolver,
    Unresolvable,
    env_value,
    find_template,
    parameter_values,
    parse_parameter_overrides,
    parse_template,
    read_env_vars,
)

# SAM CLI's local stand-ins for what only a deployed stack knows.
DEFAULT_STACK_NAME = "local"
LAMBDA_DEFAULT_TIMEOUT = 3.0  # seconds: Lambda's default when a function sets none
LAMBDA_DEFAULT_MEMORY = 128
START_LAMBDA_URL = "http://127.0.0.1:3001"  # where `sam local start-lambda` listens by default


@dataclass(frozen=True)
class Substitution:
    """An environment value that named something wsconn does not run, and what it became."""

    function: str  # the function's logical id
    variable: str
    value: str
    source: str  # e.g. "Ref ConnectionsTable (AWS::DynamoDB::Table: its TableName)"


@dataclass(frozen=True)
class ListedRoute:
    """One line of `--list`."""

    key: str
    authorization: str  # NONE | AWS_IAM | CUSTOM
    authorizer: str | None  # the ::Authorizer's logical id under CUSTOM
    api_key_required: bool
    two_way: bool
    function: str | None  # logical id (or the flag's target text)
    handler: str | None
    runtime: str | None
    unavailable: str | None = None


@dataclass(frozen=True)
class TemplateApp:
    """What a template defines for `wsconn local`, and what to tell the user at start."""

    path: Path
    api: str  # the WebSocket API's logical id
    app: App
    routes: tuple[ListedRoute, ...]
    stage: str | None  # the API's one Stage's StageName, if it has exactly one
    substitutions: tuple[Substitution, ...] = ()
    notes: tuple[str, ...] = ()  # warnings for start-up: unsupported parts, ignored input
    # Notes about one route's integration (key, note): a flag that takes the route over drops them.
    route_notes: tuple[tuple[str, str], ...] = ()
    # Functions wsconn does not run itself (logical id → runtime): --lambda-endpoint serves them.
    needs_endpoint: Mapping[str, str] = field(default_factory=dict)
    # $connect as it would run if its unavailable authorizer were replaced (by --authorizer).
    connect_without_authorizer: Route | None = None
    # Said when the API has several stages and no --stage picks one.
    stage_note: str | None = None

    def warnings(self) -> tuple[str, ...]:
        """Everything worth a warning at start, for the routes as they now are."""
        endpoint_notes = []
        for function_id, runtime in self.needs_endpoint.items():
            reason = f"{function_id} ({runtime}) needs --lambda-endpoint"
            keys = [r.key for r in self.routes if r.unavailable and r.unavailable.endswith(reason)]
            if keys:
                endpoint_notes.append(
                    f"{function_id} ({runtime}) is not a Python function wsconn runs itself, so "
                    f"{'route' if len(keys) == 1 else 'routes'} {', '.join(keys)} "
                    f"{'answers' if len(keys) == 1 else 'answer'} as a failing integration; "
                    f"serve it with `sam local start-lambda -t "
                    f"{self.path.name}` and add --lambda-endpoint {START_LAMBDA_URL}"
                )
        stage = (self.stage_note,) if self.stage_note else ()
        return (*self.notes, *stage, *(note for _, note in self.route_notes), *endpoint_notes)


# --- the WebSocket API ---------------------------------------------------------------------------


@dataclass
class _Reader:
    """Reads one WebSocket API out of a parsed template."""

    path: Path
    document: Mapping[str, Any]
    resolver: Resolver
    env_vars: Mapping[str, Mapping[str, Any]]
    shell_env: Mapping[str, str]
    lambda_endpoint: str | None
    notes: list[str] = field(default_factory=list)
    route_notes: list[tuple[str, str]] = field(default_factory=list)
    substitutions: list[Substitution] = field(default_factory=list)
    # Functions wsconn does not run itself (logical id → runtime), for --lambda-endpoint.
    needs_endpoint: dict[str, str] = field(default_factory=dict)
    # How long API Gateway waits for each AWS_PROXY integration a route uses (seconds).
    integration_timeouts: dict[str, float] = field(default_factory=dict)
    _functions: dict[str, tuple[Function | None, str | None]] = field(default_factory=dict)

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        return self.resolver.resources

    def fail(self, where: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path.name}: {where}: {what}")

    def properties(self, logical_id: str) -> Mapping[str, Any]:
        properties = self.resources[logical_id].get("Properties") or {}
        if not isinstance(properties, dict):
            raise self.fail(logical_id, "Properties is not a mapping")
        return properties

    def exists(self, logical_id: str) -> bool:
        """Whether the resource is in the stack (its Condition, if any, holds)."""
        condition = self.resources[logical_id].get("Condition")
        if condition is None:
            return True
        try:
            return self.resolver.condition(str(condition))
        except Unresolvable as exc:
            raise self.fail(logical_id, f"Condition: {exc}") from None

    def of_type(self, *kinds: str) -> list[str]:
        return [
            logical_id
            for logical_id, resource in self.resources.items()
            if isinstance(resource, dict)
            and resource.get("Type") in kinds
            and self.exists(logical_id)
        ]

    def string(self, logical_id: str, prop: str, default: str | None = None) -> str | None:
        value = self._prop_string(logical_id, self.properties(logical_id), prop)
        return default if value is None else value

    def value(self, logical_id: str, prop: str) -> Any:
        node = self.properties(logical_id).get(prop)
        try:
            return self.resolver.resolve(node)
        except Unresolvable as exc:
            raise self.fail(logical_id, f"{prop}: {exc}") from None

    # --- the API and what points at it

    def choose_api(self, wanted: str | None) -> str:
        apis = self.of_type(API)
        websocket = [
            a for a in apis if (self.string(a, "ProtocolType") or "").upper() == "WEBSOCKET"
        ]
        if wanted is not None:
            if wanted not in self.resources:
                raise ConfigError(
                    f"{self.path.name}: no API {wanted!r} (WebSocket APIs: "
                    f"{', '.join(websocket) or 'none'})"
                )
            if wanted not in websocket:
                kind = self.resources[wanted].get("Type")
                protocol = self.string(wanted, "ProtocolType") if kind == API else None
                raise ConfigError(
                    f"{self.path.name}: {wanted} is not a WebSocket API "
                    f"({f'ProtocolType {protocol}' if protocol else kind})"
                )
            return wanted
        if len(websocket) == 1:
            return websocket[0]
        if websocket:
            raise ConfigError(
                f"{self.path.name}: {len(websocket)} WebSocket APIs ({', '.join(websocket)}): "
                "choose one with --api LOGICAL_ID"
            )
        others = [
            f"{a} ({'ProtocolType ' + (self.string(a, 'ProtocolType') or '?')})" for a in apis
        ] + [
            f"{r} ({self.resources[r]['Type']})"
            for r in self.of_type(
                "AWS::Serverless::Api", "AWS::Serverless::HttpApi", "AWS::ApiGateway::RestApi"
            )
        ]
        if others:
            raise ConfigError(
                f"{self.path.name}: not a WebSocket API: {', '.join(others)}; wsconn local runs "
                "an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET"
            )
        raise ConfigError(
            f"{self.path.name}: no WebSocket API (an AWS::ApiGatewayV2::Api with ProtocolType "
            "WEBSOCKET) in the template"
        )

    def belongs(self, logical_id: str, api: str) -> bool:
        """Whether this route / stage / ... names the API (its ApiId resolves to the API's Ref)."""
        node = self.properties(logical_id).get("ApiId")
        if node is None:
            raise self.fail(logical_id, "no ApiId")
        try:
            return bool(self.resolver.resolve(node) == self.resolver.resolve({"Ref": api}))
        except Unresolvable as exc:
            raise self.fail(logical_id, f"ApiId: {exc}") from None

    def referenced(self, logical_id: str, prop: str, kinds: tuple[str, ...]) -> str | None:
        """The logical id a property names (by Ref, or by what its Ref resolves to)."""
        node = self.properties(logical_id).get(prop)
        if node is None:
            return None
        if isinstance(node, dict) and isinstance(node.get("Ref"), str) and len(node) == 1:
            named = node["Ref"]
            if named in self.resources and self.resources[named].get("Type") in kinds:
                return str(named)
        value = self.string(logical_id, prop)
        for candidate in self.of_type(*kinds):
            if value in (candidate, self.resolver.ref_overrides.get(candidate)):
                return candidate
        raise self.fail(
            logical_id, f"{prop} {value!r} names no {' or '.join(kinds)} in the template"
        )

    # --- functions

    def function_of_uri(self, logical_id: str, prop: str) -> str:
        """The logical id of the function an IntegrationUri / AuthorizerUri invokes."""
        uri = self.string(logical_id, prop)
        if not uri:
            raise self.fail(logical_id, f"no {prop}")
        match = re.search(r":function:([^:/]+)", uri)
        if match is None:
            raise self.fail(logical_id, f"{prop} {uri!r} names no Lambda function")
        name = match.group(1)
        for candidate in self.of_type(*FUNCTIONS):
            if name == candidate or name == self.string(candidate, "FunctionName"):
                return candidate
        raise self.fail(
            logical_id, f"{prop} invokes function {name!r}, which is not in the template"
        )

    def function(self, logical_id: str) -> tuple[Function | None, str | None]:
        """The Function for a logical id, or None and why it cannot run here."""
        if logical_id not in self._functions:
            self._functions[logical_id] = self._build_function(logical_id)
        return self._functions[logical_id]

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        properties = dict(self.properties(logical_id))
        if self.resources[logical_id].get("Type") == SAM_FUNCTION:
            globals_ = (self.document.get("Globals") or {}).get("Function") or {}
            if isinstance(globals_, dict):
                properties = _merge_globals(globals_, properties)
        return properties

    def handler_and_runtime(self, logical_id: str) -> tuple[str | None, str | None]:
        properties = self.function_properties(logical_id)
        return (
            self._prop_string(logical_id, properties, "Handler"),
            self._prop_string(logical_id, properties, "Runtime"),
        )

    def _prop_string(self, logical_id: str, properties: Mapping[str, Any], prop: str) -> str | None:
        if properties.get(prop) is None:
            return None
        try:
            value = self.resolver.resolve(properties[prop])
        except Unresolvable as exc:
            raise self.fail(logical_id, f"{prop}: {exc}") from None
        if value is NO_VALUE or value is None:
            return None
        if isinstance(value, (dict, list)):
            raise self.fail(logical_id, f"{prop} is not a string")
        return env_value(value)

    def _build_function(self, logical_id: str) -> tuple[Function | None, str | None]:
        properties = self.function_properties(logical_id)
        handler, runtime = self.handler_and_runtime(logical_id)
        name = self._prop_string(logical_id, properties, "FunctionName") or logical_id
        timeout = self._number(logical_id, properties, "Timeout", LAMBDA_DEFAULT_TIMEOUT)
        memory = int(self._number(logical_id, properties, "MemorySize", LAMBDA_DEFAULT_MEMORY))
        image = self._prop_string(logical_id, properties, "PackageType") == "Image"
        python = bool(runtime and runtime.startswith("python3")) and not image
        if not python:
            if self.lambda_endpoint:
                target = LambdaTarget(logical_id, self.lambda_endpoint)
                return Function(
                    target, name, timeout=timeout, memory_mb=memory, runtime=runtime
                ), None
            what = "a container image" if image else (runtime or "no Runtime")
            self.needs_endpoint[logical_id] = what
            return None, f"{logical_id} ({what}) needs --lambda-endpoint"
        code_dir, why_not = self._code_dir(logical_id, properties)
        if code_dir is None:
            return None, why_not
        if not handler:
            raise self.fail(logical_id, "a Python function needs a Handler (e.g. app.handler)")
        module, function = python_handler(handler, logical_id)
        env = self._environment(logical_id, name, properties)
        return (
            Function(
                PythonTarget(module, function),
                name,
                code_dir=code_dir,
                env=env,
                timeout=timeout,
                memory_mb=memory,
                runtime=runtime,
            ),
            None,
        )

    def _number(
        self, logical_id: str, properties: Mapping[str, Any], prop: str, default: float
    ) -> float:
        text = self._prop_string(logical_id, properties, prop)
        if text is None:
            return default
        try:
            number = float(text)
        except ValueError:
            raise self.fail(logical_id, f"{prop} {text!r} is not a number") from None
        if number <= 0:
            raise self.fail(logical_id, f"{prop} must be positive, not {text}")
        return number

    def _code_dir(
        self, logical_id: str, properties: Mapping[str, Any]
    ) -> tuple[Path | None, str | None]:
        sam = self.resources[logical_id].get("Type") == SAM_FUNCTION
        prop = "CodeUri" if sam else "Code"
        if sam and properties.get("InlineCode") is not None:
            return None, f"{logical_id} has InlineCode, not a CodeUri directory"
        try:
            code = self.resolver.resolve(properties.get(prop, "." if sam else None))
        except Unresolvable as exc:
            raise self.fail(logical_id, f"{prop}: {exc}") from None
        if isinstance(code, dict) or (isinstance(code, str) and code.startswith("s3://")):
            form = "ZipFile (inline code)" if isinstance(code, dict) and "ZipFile" in code else "S3"
            return None, f"{logical_id}'s {prop} is {form}, not a local directory"
        if not isinstance(code, str):
            raise self.fail(logical_id, f"no {prop}")
        directory = (self.path.parent / code).resolve()
        if not directory.is_dir():
            raise self.fail(logical_id, f"{prop} {code!r}: no such directory ({directory})")
        return directory, None

    def _environment(
        self, logical_id: str, name: str, properties: Mapping[str, Any]
    ) -> dict[str, str]:
        """Declared variables: --env-vars (Parameters, then the function's own) > shell > template."""
        # Only the structure is resolved here: each value is resolved on its own below, so an
        # unresolvable one costs only itself and its references are listed.
        environment = self._structure(logical_id, "Environment", properties.get("Environment"))
        variables = environment.get("Variables") if isinstance(environment, dict) else None
        variables = self._structure(logical_id, "Environment.Variables", variables)
        if not isinstance(variables, dict):
            return {}
        overrides = dict(self.env_vars.get("Parameters") or {})
        overrides.update(self.env_vars.get(logical_id) or self.env_vars.get(name) or {})
        env: dict[str, str] = {}
        for variable, node in variables.items():
            if variable in overrides:
                env[variable] = env_value(overrides[variable])
            elif variable in self.shell_env:
                env[variable] = self.shell_env[variable]
                self.notes.append(
                    f"{logical_id}: {variable} comes from your shell's environment (as with SAM CLI)"
                )
            else:
                value = self._template_value(logical_id, variable, node)
                if value is not None:
                    env[variable] = value
        return env

    def _structure(self, logical_id: str, prop: str, node: Any) -> Any:
        if not _is_intrinsic(node):
            return node
        try:
            return self.resolver.resolve(node)
        except Unresolvable as exc:
            raise self.fail(logical_id, f"{prop}: {exc}") from None

    def _template_value(self, logical_id: str, variable: str, node: Any) -> str | None:
        """The variable's value from the template (None: AWS::NoValue removed it)."""
        self.resolver.trace.clear()
        try:
            resolved = self.resolver.resolve(node)
        except Unresolvable as exc:
            self.substitutions.append(
                Substitution(logical_id, variable, "", f"{exc} (set {variable} with --env-vars)")
            )
            return ""
        if resolved is NO_VALUE:
            return None
        value = env_value(resolved)
        for source in dict.fromkeys(self.resolver.trace):
            self.substitutions.append(Substitution(logical_id, variable, value, source))
        return value


def _is_intrinsic(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and len(node) == 1
        and any(key == "Ref" or str(key).startswith("Fn::") for key in node)
    )


def _merge_globals(globals_: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals merge: maps merge (the function's keys win), lists add up, scalars: the function's."""
    merged = dict(globals_)
    for key, value in local.items():
        outer = merged.get(key)
        if (
            isinstance(outer, dict)
            and isinstance(value, dict)
            and not (_is_intrinsic(outer) or _is_intrinsic(value))
        ):
            merged[key] = _merge_globals(outer, value)
        elif isinstance(outer, list) and isinstance(value, list):
            merged[key] = outer + value
        else:
            merged[key] = value
    return merged


def python_handler(handler: str, where: str) -> tuple[str, str]:
    """Lambda's Python handler text → (module, function): `app.handler`, `pkg/mod.fn`, `pkg.mod.fn`."""
    module, dot, function = handler.rpartition(".")
    module = module.replace("/", ".")
    if (
        not dot
        or not module
        or not function
        or not all(part.isidentifier() for part in [*module.split("."), function])
    ):
        raise ConfigError(f"{where}: Handler {handler!r} is not MODULE.FUNCTION (e.g. app.handler)")
    return module, function


def load_template(
    path: str | Path,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    env_vars: Mapping[str, Mapping[str, Any]] | None = None,
    shell_env: Mapping[str, str] | None = None,
    lambda_endpoint: str | None = None,
    region: str = "us-east-1",
    account_id: str = LOCAL_ACCOUNT,
    api: str | None = None,
    api_id: str | None = None,
) -> TemplateApp:
    """The WebSocket API in the template at PATH as an App, with what `--list` and start-up show.

    `env_vars` is SAM CLI's `--env-vars` content, `shell_env` the environment SAM CLI would also
    read declared variables from, `api` the API's logical id when the template has several, and
    `api_id` what a Ref to the API resolves to (the gateway's own id). Raises ConfigError (exit 8)
    with one line naming the place for anything that cannot be followed.
    """
    file = find_template(path)
    document = parse_template(file)
    resources = {
        str(logical_id): resource
        for logical_id, resource in document["Resources"].items()
        if isinstance(resource, dict)
    }
    parameters, notes = parameter_values(document, parameter_overrides or {}, file)
    pseudo = {
        "AWS::Region": region,
        "AWS::AccountId": account_id,
        "AWS::Partition": "aws-cn" if region.startswith("cn-") else "aws",
        "AWS::StackName": DEFAULT_STACK_NAME,
        "AWS::StackId": f"arn:aws:cloudformation:{region}:{account_id}:stack/{DEFAULT_STACK_NAME}/"
        "00000000-0000-0000-0000-000000000000",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NotificationARNs": "",
    }
    resolver = Resolver(
        resources=resources,
        parameters=parameters,
        conditions=document.get("Conditions") or {},
        mappings=document.get("Mappings") or {},
        pseudo=pseudo,
    )
    reader = _Reader(
        path=file,
        document=document,
        resolver=resolver,
        env_vars=env_vars or {},
        shell_env=shell_env or {},
        lambda_endpoint=lambda_endpoint,
        notes=notes,
    )
    chosen = reader.choose_api(api)
    if api_id is not None:
        resolver.ref_overrides = {chosen: api_id}
    return _read_api(reader, chosen)


def _read_api(reader: _Reader, api: str) -> TemplateApp:
    selection = reader.string(api, "RouteSelectionExpression")
    if not selection:
        raise reader.fail(api, "a WebSocket API needs a RouteSelectionExpression")
    route_ids = [r for r in reader.of_type(ROUTE) if reader.belongs(r, api)]
    responses = {
        reader.referenced(response, "RouteId", (ROUTE,))
        for response in reader.of_type(ROUTE_RESPONSE)
        if reader.belongs(response, api)
        and (reader.string(response, "RouteResponseKey") or "") == "$default"
    }
    routes: dict[str, Route] = {}
    listed: list[ListedRoute] = []
    by_key: dict[str, str] = {}
    connect_auth: Literal["none", "iam"] = "none"
    authorizer: Authorizer | None = None
    connect_without_authorizer: Route | None = None
    for route_id in route_ids:
        key = reader.string(route_id, "RouteKey")
        if not key:
            raise reader.fail(route_id, "no RouteKey")
        if key in by_key:
            raise reader.fail(route_id, f"route key {key!r} is also {by_key[key]}'s")
        by_key[key] = route_id
        two_way = _two_way(reader, route_id, key, route_id in responses)
        function_id, function, unavailable = _integration(reader, route_id, key)
        authorization = (reader.string(route_id, "AuthorizationType") or "NONE").upper()
        authorizer_id: str | None = None
        if authorization not in ("NONE", "AWS_IAM", "CUSTOM"):
            raise reader.fail(
                route_id, f"AuthorizationType {authorization!r} (NONE, AWS_IAM or CUSTOM)"
            )
        if authorization != "NONE" and key != "$connect":
            reader.notes.append(
                f"route {key} ({route_id}): AuthorizationType {authorization} is ignored, "
                "as on AWS (only $connect is authorized)"
            )
        elif authorization == "AWS_IAM":
            connect_auth = "iam"
        elif authorization == "CUSTOM":
            authorizer_id = reader.referenced(route_id, "AuthorizerId", (AUTHORIZER,))
            if authorizer_id is None:
                raise reader.fail(route_id, "AuthorizationType CUSTOM needs an AuthorizerId")
            authorizer, why_not = _authorizer(reader, authorizer_id)
            if why_not and not unavailable:
                connect_without_authorizer = Route(key, function, two_way=two_way)
                function, unavailable = None, why_not
        api_key_required = reader.value(route_id, "ApiKeyRequired") in (True, "true", "True")
        if api_key_required:
            reader.notes.append(
                f"route {key} ({route_id}) requires an API key on AWS; wsconn local does not check "
                "API keys"
            )
        if unavailable and not unavailable.endswith("needs --lambda-endpoint"):
            reader.route_notes.append(
                (key, f"route {key} answers as a failing integration: {unavailable}")
            )
        routes[key] = Route(key, function, two_way=two_way, unavailable=unavailable)
        handler, runtime = reader.handler_and_runtime(function_id) if function_id else (None, None)
        listed.append(
            ListedRoute(
                key=key,
                authorization=authorization,
                authorizer=authorizer_id,
                api_key_required=api_key_required,
                two_way=two_way,
                function=function_id,
                handler=handler,
                runtime=runtime,
                unavailable=unavailable,
            )
        )
    stages = [
        reader.string(stage, "StageName")
        for stage in reader.of_type(STAGE)
        if reader.belongs(stage, api)
    ]
    named = [stage for stage in stages if stage]
    stage_note = None
    if len(named) > 1:
        stage_note = (
            f"the API has {len(named)} stages ({', '.join(named)}): give --stage to pick one"
        )
    app = App(
        route_selection=selection,
        routes=dict(sorted(routes.items(), key=lambda item: _route_order(item[0]))),
        connect_auth=connect_auth,
        authorizer=authorizer,
        integration_timeout=_integration_timeout(reader),
    )
    return TemplateApp(
        path=reader.path,
        api=api,
        app=app,
        routes=tuple(sorted(listed, key=lambda route: _route_order(route.key))),
        stage=named[0] if len(named) == 1 else None,
        substitutions=tuple(reader.substitutions),
        notes=tuple(dict.fromkeys(reader.notes)),
        route_notes=tuple(dict.fromkeys(reader.route_notes)),
        needs_endpoint=dict(reader.needs_endpoint),
        connect_without_authorizer=connect_without_authorizer,
        stage_note=stage_note,
    )


def _integration_timeout(reader: _Reader) -> float:
    """API Gateway's wait for the integrations (one for the app: the shortest, noted if they differ)."""
    timeouts = reader.integration_timeouts
    if not timeouts:
        return DEFAULT_HANDLER_TIMEOUT
    shortest = min(timeouts.values())
    if len(set(timeouts.values())) > 1:
        given = ", ".join(f"{key} {value:g} s" for key, value in sorted(timeouts.items()))
        reader.notes.append(
            f"integrations wait differently ({given}): every route waits {shortest:g} s here"
        )
    return shortest


def _route_order(key: str) -> tuple[int, str]:
    """$connect, $disconnect, $default, then the custom routes by key."""
    predefined = ("$connect", "$disconnect", "$default")
    if key == "*":  # --handler's catch-all, listed last
        return (len(predefined) + 1, "")
    return (predefined.index(key), "") if key in predefined else (len(predefined), key)


def _two_way(reader: _Reader, route_id: str, key: str, has_response: bool) -> bool:
    """Two-way when the route has a RouteResponseSelectionExpression and a $default RouteResponse."""
    expression = reader.string(route_id, "RouteResponseSelectionExpression")
    if expression and not has_response:
        reader.route_notes.append(
            (
                key,
                f"route {key} ({route_id}) has a RouteResponseSelectionExpression but no "
                "$default RouteResponse: one-way, as on AWS",
            )
        )
    elif has_response and not expression:
        reader.route_notes.append(
            (
                key,
                f"route {key} ({route_id}) has a RouteResponse but no "
                "RouteResponseSelectionExpression: one-way, as on AWS",
            )
        )
    return bool(expression) and has_response


def _integration(
    reader: _Reader, route_id: str, key: str
) -> tuple[str | None, Function | None, str | None]:
    """(function logical id, Function or None, why not) for a route's Target."""
    target = reader.string(route_id, "Target")
    if not target:
        return None, None, f"{route_id} has no Target (no integration)"
    prefix, _, integration_id = target.partition("/")
    if prefix != "integrations" or not integration_id:
        raise reader.fail(route_id, f"Target {target!r} is not integrations/<IntegrationId>")
    if integration_id not in reader.of_type(INTEGRATION):
        raise reader.fail(
            route_id, f"Target {target!r} names no AWS::ApiGatewayV2::Integration in the template"
        )
    kind = (reader.string(integration_id, "IntegrationType") or "").upper()
    if kind != "AWS_PROXY":
        return (
            None,
            None,
            (
                f"{integration_id} is a {kind or 'typeless'} integration "
                "(only AWS_PROXY runs locally)"
            ),
        )
    function_id = reader.function_of_uri(integration_id, "IntegrationUri")
    function, why_not = reader.function(function_id)
    timeout_ms = reader.string(integration_id, "TimeoutInMillis")
    timeout = DEFAULT_HANDLER_TIMEOUT
    if timeout_ms is not None:
        try:
            timeout = float(timeout_ms) / 1000
        except ValueError:
            raise reader.fail(
                integration_id, f"TimeoutInMillis {timeout_ms!r} is not a number"
            ) from None
    reader.integration_timeouts[integration_id] = timeout
    return function_id, function, why_not


def _authorizer(reader: _Reader, authorizer_id: str) -> tuple[Authorizer | None, str | None]:
    kind = (reader.string(authorizer_id, "AuthorizerType") or "").upper()
    if kind != "REQUEST":
        return (
            None,
            f"{authorizer_id} is a {kind or 'typeless'} authorizer; WebSocket APIs use REQUEST",
        )
    function_id = reader.function_of_uri(authorizer_id, "AuthorizerUri")
    function, why_not = reader.function(function_id)
    if function is None:
        return None, f"its authorizer {authorizer_id}: {why_not}"
    sources = reader.value(authorizer_id, "IdentitySource") or []
    if isinstance(sources, str):
        sources = sources.split(",")
    if not isinstance(sources, list):
        raise reader.fail(authorizer_id, "IdentitySource is not a list")
    identity = tuple(str(source).strip() for source in sources if str(source).strip())
    for source in identity:
        if not source.startswith(("route.request.header.", "route.request.querystring.")):
            reader.notes.append(
                f"{authorizer_id}: IdentitySource {source} is not checked locally (only "
                "route.request.header.* and route.request.querystring.* are)"
            )
    return Authorizer(function, identity), None


# --- --list ---------------------------------------------------------------------------------------


def list_text(route_selection: str, routes: Iterable[ListedRoute]) -> str:
    """`--list` on a terminal or in a pipe: the selection expression, then one aligned line a route."""
    rows = []
    for route in routes:
        authorization = route.authorization + (f":{route.authorizer}" if route.authorizer else "")
        extra = []
        if route.api_key_required:
            extra.append("api key required (not checked)")
        if route.unavailable:
            extra.append(f"unavailable: {route.unavailable}")
        rows.append(
            [
                route.key,
                authorization,
                "two-way" if route.two_way else "one-way",
                route.function or "-",
                route.handler or "-",
                route.runtime or "-",
                "; ".join(extra),
            ]
        )
    widths = [max((len(row[column]) for row in rows), default=0) for column in range(6)]
    lines = [f"route selection: {route_selection}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:6], widths, strict=True)]
        lines.append(("  ".join(cells) + ("  " + row[6] if row[6] else "")).rstrip())
    return "\n".join(lines)


def list_json(route_selection: str, routes: Iterable[ListedRoute], **about: Any) -> dict[str, Any]:
    """`--list -o json`: the same as one object."""
    return {
        **about,
        "routeSelectionExpression": route_selection,
        "routes": [
            {
                "routeKey": route.key,
                "authorization": route.authorization,
                "authorizer": route.authorizer,
                "apiKeyRequired": route.api_key_required,
                "twoWay": route.two_way,
                "function": route.function,
                "handler": route.handler,
                "runtime": route.runtime,
                "unavailable": route.unavailable,
            }
            for route in routes
        ],
    }


def listed_routes(app: App, *, catch_all_only: bool = False) -> tuple[ListedRoute, ...]:
    """`--list` lines for routes the flags made (and `--handler`'s catch-all, as key `*`)."""
    routes = [] if catch_all_only else list(app.routes.values())
    if catch_all_only and app.catch_all is not None:
        routes.append(replace(app.catch_all, key="*"))
    listed = []
    for route in routes:
        authorization = "NONE"
        if route.key == "$connect":
            authorization = (
                "CUSTOM" if app.authorizer else app.connect_auth.upper().replace("IAM", "AWS_IAM")
            )
        function = route.function
        listed.append(
            ListedRoute(
                key=route.key,
                authorization=authorization,
                authorizer=None,
                api_key_required=False,
                two_way=route.two_way,
                function=function.name if function else None,
                handler=str(function.target) if function else None,
                runtime=function.runtime if function else None,
                unavailable=route.unavailable,
            )
        )
    return tuple(sorted(listed, key=lambda route: _route_order(route.key)))


def with_flags(
    template: TemplateApp,
    flags: App,
    *,
    two_way: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    handler_timeout: float | None = None,
    route_selection: str | None = None,
    connect_auth: Literal["none", "iam"] | None = None,
    stage: str | None = None,
) -> TemplateApp:
    """The template's app with what the command line says on top.

    `--handler` / `--route` routes (in `flags`) take over their keys, and its authorizer the
    template's; the rest are the flags the user gave: `two_way` keys ('*': all), `env` for every
    function, `handler_timeout` (how long routes wait, and a cap on each function's Timeout),
    `route_selection`, `connect_auth`,
    `stage` (over the template's one Stage).
    """
    routes = dict(template.app.routes)
    listed = {route.key: route for route in template.routes}
    if flags.authorizer is not None and template.connect_without_authorizer is not None:
        # --authorizer replaces the one that could not run: $connect runs again.
        routes["$connect"] = template.connect_without_authorizer
        listed["$connect"] = replace(listed["$connect"], unavailable=None)
    for key, route in flags.routes.items():
        routes[key] = route
        before = listed.get(key)
        listed[key] = ListedRoute(
            key=key,
            authorization=before.authorization if before else "NONE",
            authorizer=before.authorizer if before else None,
            api_key_required=before.api_key_required if before else False,
            two_way=route.two_way,
            function=route.function.name if route.function else None,
            handler=str(route.function.target) if route.function else None,
            runtime=route.function.runtime if route.function else None,
            unavailable=route.unavailable,
        )
    for key in two_way:
        if key != "*" and key not in routes:
            raise ConfigError(f"--two-way {key}: the template has no route {key!r}")
        if key in ("$connect", "$disconnect"):
            raise ConfigError(f"--two-way {key}: only message routes answer the caller")
    wanted = {key for key in routes if key not in ("$connect", "$disconnect")}
    if "*" not in two_way:
        wanted &= set(two_way)

    def adjusted(function: Function | None) -> Function | None:
        if function is None or any(function is route.function for route in flags.routes.values()):
            return function
        if env:
            function = replace(function, env={**function.env, **env})
        if handler_timeout is not None and handler_timeout < function.timeout:
            function = replace(function, timeout=handler_timeout)
        return function

    routes = {
        key: replace(
            route, function=adjusted(route.function), two_way=route.two_way or key in wanted
        )
        for key, route in routes.items()
    }
    listed = {
        key: replace(route, two_way=route.two_way or key in wanted) for key, route in listed.items()
    }
    authorizer = flags.authorizer or template.app.authorizer
    if authorizer is not None and flags.authorizer is None:
        function = adjusted(authorizer.function)
        assert function is not None
        authorizer = replace(authorizer, function=function)
    app = App(
        route_selection=route_selection or template.app.route_selection,
        routes=dict(sorted(routes.items(), key=lambda item: _route_order(item[0]))),
        connect_auth=connect_auth or template.app.connect_auth,
        authorizer=authorizer,
        catch_all=flags.catch_all,
        integration_timeout=template.app.integration_timeout
        if handler_timeout is None
        else handler_timeout,
    )
    return replace(
        template,
        app=app,
        routes=tuple(sorted(listed.values(), key=lambda route: _route_order(route.key))),
        route_notes=tuple((k, note) for k, note in template.route_notes if k not in flags.routes),
        stage=stage or template.stage,
        stage_note=None if stage else template.stage_note,
    )


def read_app(
    path: str | Path,
    *,
    flags: App,
    parameter_overrides: Sequence[str] = (),
    env_vars: str | None = None,
    lambda_endpoint: str | None = None,
    api: str | None = None,
    region: str = "us-east-1",
    shell_env: Mapping[str, str] | None = None,
    two_way: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    handler_timeout: float | None = None,
    route_selection: str | None = None,
    connect_auth: Literal["none", "iam"] | None = None,
    stage: str | None = None,
) -> TemplateApp:
    """`wsconn local --template PATH ...`: the template's app with the command line's flags on top."""
    template = load_template(
        path,
        parameter_overrides=parse_parameter_overrides(parameter_overrides),
        env_vars=read_env_vars(env_vars) if env_vars is not None else None,
        shell_env=shell_env,
        lambda_endpoint=lambda_endpoint.rstrip("/") if lambda_endpoint else None,
        region=region,
        account_id=LOCAL_ACCOUNT,
        api=api,
        api_id=LOCAL_API_ID,
    )
    return with_flags(
        template,
        flags,
        two_way=two_way,
        env=env,
        handler_timeout=handler_timeout,
        route_selection=route_selection,
        connect_auth=connect_auth,
        stage=stage,
    )


def startup_lines(template: TemplateApp) -> list[str]:
    """What `wsconn local --template` says before it listens: what it read, substituted, skipped."""
    lines = [
        f"{template.path.name}: API {template.api}, routes "
        + (", ".join(template.app.routes) or "none")
        + " (--list shows them)"
    ]
    if template.substitutions:
        lines.append(
            "environment values that name what wsconn does not run (point them at local "
            "services with --env-vars):"
        )
        grouped: dict[tuple[str, str, str], list[str]] = {}
        for item in template.substitutions:
            grouped.setdefault((item.variable, item.value, item.source), []).append(item.function)
        lines.extend(
            f"  {variable}={value} ({', '.join(functions)})  <- {source}"
            for (variable, value, source), functions in grouped.items()
        )
    lines.extend(f"WARNING: {note}" for note in template.warnings())
    return lines


# --- Python runtimes -----------------------------------------------------------------------------


def runnable_python(name: str) -> str | None:
    """`name` (e.g. python3.12) on PATH, if it runs: a pyenv or asdf shim for a version that is
    installed but not selected is on PATH and only says "command not found" (exit 127)."""
    found = shutil.which(name)
    if found is None:
        return None
    try:
        ran = subprocess.run(
            [found, "-c", ""],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if ran.returncode == 0 else None


def python_runtimes(
    app: App,
    python_version: str,
    *,
    explicit: bool,
    which: Callable[[str], str | None] = runnable_python,
) -> tuple[App, tuple[str, ...]]:
    """The app with each function whose python3.X runtime is not the interpreter's run by the
    `python3.X` found on PATH, and one note per runtime so chosen.

    `python_version` is the run's interpreter's "3.X". An explicit --python runs everything, and
    so does it when PATH has no such `python3.X` (the backends then say, per function, which
    version runs it).
    """
    chosen: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for function in _functions_of(app):
        runtime = function.runtime or ""
        if explicit or not runtime.startswith("python3") or runtime == f"python{python_version}":
            continue
        if runtime not in chosen:
            found = which(runtime)
            if not found:
                continue
            chosen[runtime] = found
        if function.name not in names.setdefault(runtime, []):
            names[runtime].append(function.name)
    notes = tuple(
        f"{', '.join(names[runtime])} "
        f"{'declares' if len(names[runtime]) == 1 else 'declare'} {runtime}: running "
        f"{'it' if len(names[runtime]) == 1 else 'them'} with {found} (from PATH; --python "
        "chooses one interpreter for all)"
        for runtime, found in chosen.items()
    )

    def with_python(function: Function | None) -> Function | None:
        if function is None or function.runtime not in chosen:
            return function
        return replace(function, python=chosen[function.runtime or ""])

    routes = {
        key: replace(route, function=with_python(route.function))
        for key, route in app.routes.items()
    }
    authorizer = app.authorizer
    if authorizer is not None and authorizer.function.runtime in chosen:
        python = chosen[authorizer.function.runtime or ""]
        authorizer = replace(authorizer, function=replace(authorizer.function, python=python))
    return replace(app, routes=routes, authorizer=authorizer), notes


def _functions_of(app: App) -> list[Function]:
    functions = [route.function for route in app.routes.values() if route.function is not None]
    if app.authorizer is not None:
        functions.append(app.authorizer.function)
    return [f for f in functions if isinstance(f.target, PythonTarget)]
