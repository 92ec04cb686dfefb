"""CloudFormation's layer of a template: the file (YAML with the short tags, or JSON), SAM CLI's
`--parameter-overrides` and `--env-vars`, parameters, conditions and the intrinsic functions.

Intrinsics are resolved here and nowhere else; template.py reads the WebSocket API out of the
resolved values. Pure: no sockets, no processes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsconn.errors import ConfigError

# What SAM CLI looks for in a directory, in its order.
TEMPLATE_NAMES = ("template.yaml", "template.yml", "template.json")

API = "AWS::ApiGatewayV2::Api"
ROUTE = "AWS::ApiGatewayV2::Route"
INTEGRATION = "AWS::ApiGatewayV2::Integration"
ROUTE_RESPONSE = "AWS::ApiGatewayV2::RouteResponse"
AUTHORIZER = "AWS::ApiGatewayV2::Authorizer"
STAGE = "AWS::ApiGatewayV2::Stage"
SAM_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
FUNCTIONS = (SAM_FUNCTION, LAMBDA_FUNCTION)
# Resources wsconn itself plays: a reference to them is not worth a line at start-up.
EMULATED = (API, ROUTE, INTEGRATION, ROUTE_RESPONSE, AUTHORIZER, STAGE)

# The property that names a resource, for those whose Ref (locally) is their name.
NAME_PROPERTIES = {
    SAM_FUNCTION: "FunctionName",
    LAMBDA_FUNCTION: "FunctionName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::DynamoDB::GlobalTable": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Serverless::StateMachine": "Name",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::SSM::Parameter": "Name",
    "AWS::Events::EventBus": "Name",
}


# --- reading the file ----------------------------------------------------------------------------

# CloudFormation's short forms: `!Ref X` is {"Ref": X}, `!Condition X` is {"Condition": X},
# every other `!Name v` is {"Fn::Name": v}.
_SHORT_TAGS = frozenset(
    {
        *("Ref", "Condition", "And", "Base64", "Cidr", "Equals", "FindInMap", "GetAtt", "GetAZs"),
        *("If", "ImportValue", "Join", "Length", "Not", "Or", "Select", "Split", "Sub"),
        *("ToJsonString", "Transform"),
    }
)


class _TemplateLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short tags; dates stay strings."""


_TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if suffix not in _SHORT_TAGS:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown tag !{suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_tag)


def find_template(path: str | Path) -> Path:
    """The template file: PATH itself, or SAM's default names in the directory PATH."""
    given = Path(path)
    if given.is_dir():
        for name in TEMPLATE_NAMES:
            if (given / name).is_file():
                return given / name
        raise ConfigError(f"--template {path}: no {', '.join(TEMPLATE_NAMES)} in that directory")
    if not given.exists():
        raise ConfigError(f"--template {path}: no such file or directory")
    return given


def parse_template(path: Path) -> dict[str, Any]:
    """The template as plain data (short tags as their long forms); errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read template {path}: {_reason(exc)}") from None
    document: Any
    if path.suffix == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name} line {exc.lineno}: {exc.msg}") from None
    else:
        try:
            document = yaml.load(text, Loader=_TemplateLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f" line {mark.line + 1}" if mark is not None else ""
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(f"{path.name}{line}: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path.name}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ConfigError(f"{path.name}: not a CloudFormation template (no Resources section)")
    return document


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


# --- --parameter-overrides and --env-vars, as SAM CLI reads them -----------------------------------

_QUOTED_OR_BARE = r"""(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|(?:\\.|[^\s"'\\])*)"""
_KEY = r"""(?:"[A-Za-z0-9]+"|'[A-Za-z0-9]+'|[A-Za-z0-9]+)"""
_OVERRIDE = re.compile(
    rf"""\s*(?:ParameterKey=(?P<long_key>{_KEY}),ParameterValue=(?P<long_value>{_QUOTED_OR_BARE})"""
    rf"""|(?P<key>{_KEY})=(?P<value>{_QUOTED_OR_BARE}))(?=\s|$)"""
)


def parse_parameter_overrides(values: Iterable[str]) -> dict[str, str]:
    """`Key=Value` pairs separated by spaces (or SAM's `ParameterKey=K,ParameterValue=V`).

    Quoting as SAM CLI accepts it: `Key="two words"`, `Key='x'`, `Key=two\\ words`. A later pair
    wins over an earlier one for the same key.
    """
    result: dict[str, str] = {}
    for text in values:
        position, text = 0, text.strip()
        while position < len(text):
            match = _OVERRIDE.match(text, position)
            if match is None:
                bad = text[position:].split()[0]
                raise ConfigError(
                    f"--parameter-overrides: {bad!r} is not Key=Value "
                    "(e.g. 'TableName=chat Stage=dev')"
                )
            key = match.group("key") or match.group("long_key")
            value = match.group("value") if match.group("key") else match.group("long_value")
            result[_unquote(key)] = _unquote(value)
            position = match.end()
    return result


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text.replace("\\ ", " ").replace('\\"', '"').replace("\\'", "'")


def read_env_vars(path: str | Path) -> dict[str, dict[str, Any]]:
    """SAM CLI's `--env-vars` file: `{"FunctionLogicalId": {"VAR": "value"}, "Parameters": {...}}`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --env-vars {path}: {_reason(exc)}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--env-vars {path} line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--env-vars {path}: expected a JSON object of objects")
    for name, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"--env-vars {path}: {name!r} must map to an object of variables, "
                f'e.g. {{"{name}": {{"TABLE_NAME": "chat"}}}}'
            )
    return data


def env_value(value: Any) -> str:
    """An environment value as Lambda gets it, stringified as SAM CLI does (lists, maps → "")."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- intrinsic functions -------------------------------------------------------------------------


class Unresolvable(Exception):
    """A value that cannot be worked out locally; the message says why."""


class _NoValue:
    """`AWS::NoValue`: the property is removed."""


NO_VALUE = _NoValue()
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass
class Resolver:
    """Resolves the intrinsic functions of one template, given its parameters' values."""

    resources: Mapping[str, Mapping[str, Any]]
    parameters: Mapping[str, str | list[str] | None]
    conditions: Mapping[str, Any]
    mappings: Mapping[str, Any]
    pseudo: Mapping[str, str]
    # Ref of these logical ids gives this value (the WebSocket API → the gateway's api id).
    ref_overrides: Mapping[str, str] = field(default_factory=dict)
    # References to resources, as they are resolved: for the start-up list of substitutions.
    trace: list[str] = field(default_factory=list)
    _condition_values: dict[str, bool] = field(default_factory=dict)
    _evaluating: set[str] = field(default_factory=set)

    def resolve(self, node: Any) -> Any:
        """The node with every intrinsic function replaced by its value."""
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, argument),) = node.items()
                if key == "Ref":
                    return self._ref(argument)
                handler = self._functions().get(key)
                if handler is not None:
                    return handler(argument)
                if isinstance(key, str) and key.startswith("Fn::"):
                    raise Unresolvable(f"{key} is not resolved by wsconn local")
            resolved = {key: self.resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not NO_VALUE}
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        return node

    def string(self, node: Any, what: str) -> str:
        value = self.resolve(node)
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise Unresolvable(f"{what} is not a string")
        return str(value)

    def condition(self, name: str) -> bool:
        if name in self._condition_values:
            return self._condition_values[name]
        if name not in self.conditions:
            raise Unresolvable(f"no condition {name!r} in Conditions")
        if name in self._evaluating:
            raise Unresolvable(f"condition {name!r} refers to itself")
        self._evaluating.add(name)
        try:
            value = self._truth(self.conditions[name])
        finally:
            self._evaluating.discard(name)
        self._condition_values[name] = value
        return value

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::If": self._if,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda arg: base64.b64encode(
                self.string(arg, "Fn::Base64's argument").encode()
            ).decode(),
            "Fn::Equals": lambda arg: self._truth({"Fn::Equals": arg}),
            "Fn::Not": lambda arg: self._truth({"Fn::Not": arg}),
            "Fn::And": lambda arg: self._truth({"Fn::And": arg}),
            "Fn::Or": lambda arg: self._truth({"Fn::Or": arg}),
        }

    def _truth(self, node: Any) -> bool:
        """A condition: Fn::Equals / Not / And / Or / {"Condition": name}."""
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Condition":
                return self.condition(str(argument))
            if key == "Fn::Equals" and isinstance(argument, list) and len(argument) == 2:
                left, right = (_comparable(self.resolve(side)) for side in argument)
                return bool(left == right)
            if key == "Fn::Not" and isinstance(argument, list) and len(argument) == 1:
                return not self._truth(argument[0])
            if key in ("Fn::And", "Fn::Or") and isinstance(argument, list) and argument:
                values = (self._truth(item) for item in argument)
                return all(values) if key == "Fn::And" else any(values)
        if isinstance(node, bool):
            return node
        raise Unresolvable(f"not a condition: {_short(node)}")

    def _ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise Unresolvable(f"Ref of {_short(name)}")
        if name in self.parameters:
            value = self.parameters[name]
            if value is None:
                raise Unresolvable(
                    f"parameter {name} has no Default: give it with --parameter-overrides {name}=..."
                )
            return value
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.ref_overrides:
            return self.ref_overrides[name]
        if name in self.resources:
            kind = self.resources[name].get("Type")
            if kind in ("AWS::Lambda::Alias", "AWS::Lambda::Version"):
                return self._qualified_arn(name)
            return self._name_of(name, f"Ref {name}")
        for logical_id, resource in self.resources.items():
            alias = (resource.get("Properties") or {}).get("AutoPublishAlias")
            if resource.get("Type") == SAM_FUNCTION and name == f"{logical_id}Alias{alias}":
                # The alias SAM makes for AutoPublishAlias: its Ref is the function's ARN with it.
                return f"{self._get_att([logical_id, 'Arn'])}:{alias}"
        raise Unresolvable(f"Ref {name}: no parameter or resource {name!r} in the template")

    def _qualified_arn(self, logical_id: str) -> str:
        """An AWS::Lambda::Alias or ::Version's Ref: its function's ARN and qualifier."""
        properties = self.resources[logical_id].get("Properties") or {}
        function = self.string(properties.get("FunctionName"), f"{logical_id}'s FunctionName")
        if ":function:" not in function:
            function = (
                f"{self._get_att([function, 'Arn'])}"
                if function in self.resources
                else (
                    f"arn:{self.pseudo['AWS::Partition']}:lambda:{self.pseudo['AWS::Region']}:"
                    f"{self.pseudo['AWS::AccountId']}:function:{function}"
                )
            )
        qualifier = properties.get("Name") if "Name" in properties else "1"
        return f"{function}:{self.string(qualifier, f'{logical_id} qualifier')}"

    def _name_of(self, logical_id: str, how: str) -> str:
        """A resource's name here: its name property (e.g. TableName), else its logical id."""
        kind = str(self.resources[logical_id].get("Type", ""))
        prop = NAME_PROPERTIES.get(kind)
        properties = self.resources[logical_id].get("Properties") or {}
        name = logical_id
        if prop and isinstance(properties, dict) and prop in properties:
            name = self.string(properties[prop], f"{logical_id}'s {prop}")
            became = f"its {prop}"
        else:
            became = "its logical id"
        if kind not in EMULATED:
            self.trace.append(f"{how} ({kind}: {became})")
        return name

    def _get_att(self, argument: Any) -> str:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise Unresolvable(f"Fn::GetAtt needs [LogicalId, Attribute], not {_short(argument)}")
        logical_id = argument[0]
        attribute = self.string(argument[1], "Fn::GetAtt's attribute")
        if logical_id not in self.resources:
            raise Unresolvable(f"Fn::GetAtt {logical_id}.{attribute}: no resource {logical_id!r}")
        kind = str(self.resources[logical_id].get("Type", ""))
        how = f"Fn::GetAtt {logical_id}.{attribute}"
        region, account = self.pseudo["AWS::Region"], self.pseudo["AWS::AccountId"]
        partition = self.pseudo["AWS::Partition"]
        if kind == API and attribute in ("ApiId", "ApiEndpoint"):
            api_id = self.ref_overrides.get(logical_id, logical_id)
            if attribute == "ApiId":
                return api_id
            return f"wss://{api_id}.execute-api.{region}.amazonaws.com"
        name = self._name_of(logical_id, how)
        if attribute != "Arn" and not attribute.endswith("Arn"):
            return name
        service = kind.split("::")[1].lower() if kind.count("::") == 2 else "unknown"
        if kind in FUNCTIONS:
            return f"arn:{partition}:lambda:{region}:{account}:function:{name}"
        if "DynamoDB" in kind or kind == "AWS::Serverless::SimpleTable":
            table = f"arn:{partition}:dynamodb:{region}:{account}:table/{name}"
            return f"{table}/stream/local" if attribute == "StreamArn" else table
        if kind == "AWS::S3::Bucket":
            return f"arn:{partition}:s3:::{name}"
        return f"arn:{partition}:{service}:{region}:{account}:{name}"

    def _sub(self, argument: Any) -> str:
        variables: dict[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text = argument[0]
            variables = {key: self.resolve(value) for key, value in argument[1].items()}
        else:
            text = argument
        if not isinstance(text, str):
            raise Unresolvable(f"Fn::Sub needs a string, not {_short(text)}")

        def value_of(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                value = self._get_att(name.split(".", 1))
            else:
                value = self._ref(name)
            if isinstance(value, (list, dict, _NoValue)):
                raise Unresolvable(f"Fn::Sub: ${{{name}}} is not a string")
            return env_value(value)

        return _SUB_VARIABLE.sub(value_of, text)

    def _join(self, argument: Any) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise Unresolvable(f"Fn::Join needs [delimiter, [values]], not {_short(argument)}")
        delimiter = self.string(argument[0], "Fn::Join's delimiter")
        values = self.resolve(argument[1])
        if not isinstance(values, list):
            raise Unresolvable("Fn::Join's values are not a list")
        return delimiter.join(env_value(value) for value in values)

    def _if(self, argument: Any) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise Unresolvable(f"Fn::If needs [condition, then, else], not {_short(argument)}")
        chosen = argument[1] if self.condition(str(argument[0])) else argument[2]
        return self.resolve(chosen)

    def _select(self, argument: Any) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise Unresolvable(f"Fn::Select needs [index, [values]], not {_short(argument)}")
        index, values = self.resolve(argument[0]), self.resolve(argument[1])
        try:
            return values[int(index)]
        except (ValueError, TypeError, IndexError, KeyError):
            raise Unresolvable(f"Fn::Select: no item {index!r}") from None

    def _split(self, argument: Any) -> list[str]:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise Unresolvable(f"Fn::Split needs [delimiter, string], not {_short(argument)}")
        delimiter = self.string(argument[0], "Fn::Split's delimiter")
        return self.string(argument[1], "Fn::Split's string").split(delimiter)

    def _find_in_map(self, argument: Any) -> Any:
        if not (isinstance(argument, list) and len(argument) >= 3):
            raise Unresolvable(f"Fn::FindInMap needs [map, key, key], not {_short(argument)}")
        keys = [self.string(item, "Fn::FindInMap's key") for item in argument[:3]]
        try:
            return self.resolve(self.mappings[keys[0]][keys[1]][keys[2]])
        except (KeyError, TypeError):
            raise Unresolvable(f"Fn::FindInMap: no {'/'.join(keys)} in Mappings") from None


def _comparable(value: Any) -> Any:
    """A value as Fn::Equals compares it: scalars as their text (`8` equals `"8"`)."""
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    return value if isinstance(value, dict) else env_value(value)


def _short(node: Any) -> str:
    text = json.dumps(node, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def parameter_values(
    document: Mapping[str, Any], overrides: Mapping[str, str], path: Path
) -> tuple[dict[str, str | list[str] | None], list[str]]:
    """Each parameter's value (an override, else its Default, else None) and notes."""
    declared = document.get("Parameters") or {}
    if not isinstance(declared, dict):
        raise ConfigError(f"{path}: Parameters is not a mapping")
    values: dict[str, str | list[str] | None] = {}
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {}
        raw = overrides.get(name, spec.get("Default"))
        if raw is None:
            values[name] = None
            continue
        text = env_value(raw) if not isinstance(raw, list) else ",".join(map(env_value, raw))
        allowed = spec.get("AllowedValues")
        if isinstance(allowed, list) and text not in [env_value(item) for item in allowed]:
            choices = ", ".join(env_value(item) for item in allowed)
            raise ConfigError(
                f"parameter {name}: {text!r} is not one of its AllowedValues ({choices})"
            )
        kind = str(spec.get("Type", "String"))
        is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
        values[name] = [item.strip() for item in text.split(",")] if is_list else text
    notes = [
        f"--parameter-overrides {name}: the template declares no such parameter; ignored"
        for name in overrides
        if name not in declared
    ]
    return values, notes
