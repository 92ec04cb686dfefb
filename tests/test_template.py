"""The template reader: SAM / CloudFormation → routes, functions, auth; intrinsics; --list text.

Pure functions, no sockets: each template is written here in the style users deploy it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.templates import (
    AUTHORIZER_FILES,
    AUTHORIZER_YAML,
    CFN_FILES,
    CFN_JSON,
    SAM_CHAT,
    SAM_CHAT_FILES,
    write_app,
)
from wsconn.errors import ConfigError, ExitCode
from wsconn.local.app import App, Authorizer, Function, LambdaTarget, PythonTarget, Route
from wsconn.local.template import (
    Substitution,
    TemplateApp,
    env_value,
    find_template,
    list_json,
    list_text,
    load_template,
    parse_parameter_overrides,
    python_handler,
    python_runtimes,
    read_env_vars,
    startup_lines,
    with_flags,
)


@pytest.fixture
def sam_chat(tmp_path: Path) -> Path:
    return write_app(tmp_path / "chat", SAM_CHAT, SAM_CHAT_FILES, "template.yaml")


@pytest.fixture
def cfn_json(tmp_path: Path) -> Path:
    return write_app(tmp_path / "cfn", CFN_JSON, CFN_FILES, "template.json")


@pytest.fixture
def authorized(tmp_path: Path) -> Path:
    return write_app(tmp_path / "auth", AUTHORIZER_YAML, AUTHORIZER_FILES, "template.yml")


def listing(template: TemplateApp) -> str:
    return list_text(template.app.route_selection, template.routes)


def python_function(route: Route) -> Function:
    assert route.function is not None, route.unavailable
    assert isinstance(route.function.target, PythonTarget)
    return route.function


# --- SAM with Globals, short tags, ${Fn.Arn}, a two-way route, one Stage ---------------------------


def test_sam_template_routes_functions_and_globals(sam_chat: Path) -> None:
    template = load_template(sam_chat.parent)  # a directory: SAM's default name in it
    assert template.path == sam_chat
    assert template.api == "ChatApi"
    assert template.stage == "prod"
    app = template.app
    assert app.route_selection == "$request.body.action"
    assert list(app.routes) == ["$connect", "$disconnect", "echo", "sendmessage"]
    assert app.connect_auth == "none" and app.authorizer is None

    connect = python_function(app.routes["$connect"])
    assert connect.target == PythonTarget("app", "handler")
    assert connect.name == "OnConnectFunction"
    assert connect.code_dir == sam_chat.parent / "onconnect"
    assert connect.runtime == "python3.11"  # from Globals
    assert connect.timeout == 10 and connect.memory_mb == 256  # from Globals
    # Globals' variables merged with the function's own.
    assert dict(connect.env) == {
        "TABLE_NAME": "chat_connections",
        "LOG_LEVEL": "INFO",
        "GREETING": "hello",
    }

    send = python_function(app.routes["sendmessage"])
    assert send.target == PythonTarget(
        "chat.send", "handler"
    )  # `chat/send.handler`, as Lambda reads it
    assert send.code_dir == sam_chat.parent / "sendmessage"
    assert send.memory_mb == 512  # the function's own value wins over Globals'
    # A function keeps its own Timeout; API Gateway stops waiting after 29 s (the route fails
    # then, the function runs on).
    assert python_function(app.routes["$disconnect"]).timeout == 60
    assert app.integration_timeout == 29

    assert app.routes["echo"].two_way is True
    assert app.routes["sendmessage"].two_way is False
    assert template.notes == ()


def test_sam_template_list_text_exact(sam_chat: Path) -> None:
    assert listing(load_template(sam_chat)) == (
        "route selection: $request.body.action\n"
        "$connect     NONE  one-way  OnConnectFunction     app.handler        python3.11\n"
        "$disconnect  NONE  one-way  OnDisconnectFunction  app.handler        python3.11\n"
        "echo         NONE  two-way  SendMessageFunction   chat/send.handler  python3.11\n"
        "sendmessage  NONE  one-way  SendMessageFunction   chat/send.handler  python3.11"
    )


def test_environment_reference_to_a_table_becomes_its_table_name_and_is_listed(
    sam_chat: Path,
) -> None:
    template = load_template(sam_chat)
    assert (
        Substitution(
            "SendMessageFunction",
            "TABLE_NAME",
            "chat_connections",
            "Ref ConnectionsTable (AWS::DynamoDB::Table: its TableName)",
        )
        in template.substitutions
    )
    # One per function that has the variable; nothing for plain values.
    assert {s.function for s in template.substitutions} == {
        "OnConnectFunction",
        "OnDisconnectFunction",
        "SendMessageFunction",
    }
    assert {s.variable for s in template.substitutions} == {"TABLE_NAME"}


def test_parameter_overrides_reach_conditions_names_and_stage(sam_chat: Path) -> None:
    template = load_template(
        sam_chat,
        parameter_overrides=parse_parameter_overrides(["TableName=chat_dev Stage=dev"]),
    )
    env = python_function(template.app.routes["$connect"]).env
    assert env["TABLE_NAME"] == "chat_dev"  # Ref table → its TableName → the parameter
    assert env["LOG_LEVEL"] == "DEBUG"  # Fn::If on the IsProd condition
    assert template.stage == "dev"


def test_parameter_override_outside_allowed_values_is_a_config_error(sam_chat: Path) -> None:
    with pytest.raises(ConfigError, match=r"parameter Stage: 'qa' is not one of its AllowedValues"):
        load_template(sam_chat, parameter_overrides={"Stage": "qa"})


def test_override_of_an_undeclared_parameter_is_noted(sam_chat: Path) -> None:
    template = load_template(sam_chat, parameter_overrides={"Tabel": "x"})
    assert template.notes == (
        "--parameter-overrides Tabel: the template declares no such parameter; ignored",
    )


def test_pseudo_parameters_follow_the_gateway_region_and_account(sam_chat: Path) -> None:
    sam_chat.write_text(
        sam_chat.read_text().replace(
            "GREETING: hello",
            "GREETING: !Sub '${AWS::Region}/${AWS::AccountId}/${AWS::Partition}/${AWS::StackName}'",
        )
    )
    template = load_template(sam_chat, region="eu-west-1", account_id="000000000042")
    env = python_function(template.app.routes["$connect"]).env
    assert env["GREETING"] == "eu-west-1/000000000042/aws/local"


# --- plain CloudFormation in JSON ---------------------------------------------------------------


def test_cloudformation_json_template(cfn_json: Path) -> None:
    template = load_template(cfn_json)
    app = template.app
    assert app.route_selection == "${request.body.service}/${request.body.action}"
    assert app.connect_auth == "iam"  # AuthorizationType: AWS_IAM on $connect
    assert template.stage == "live"
    connect = python_function(app.routes["$connect"])
    assert connect.target == PythonTarget("handlers.connect", "on_connect")
    assert connect.code_dir == cfn_json.parent / "src"  # Code: a local path
    assert connect.timeout == 3 and connect.memory_mb == 128  # Lambda's defaults
    # An integration URI built with Fn::Sub's variable map and a FunctionName.
    join = python_function(app.routes["chat/join"])
    assert join.target == PythonTarget("handlers.join", "on_join")
    assert join.name == "chat-join"
    assert join.timeout == 45
    assert dict(join.env) == {"QUEUE": "arn:aws:sqs:us-east-1:123456789012:joins"}
    assert template.substitutions == (
        Substitution(
            "JoinFn",
            "QUEUE",
            "arn:aws:sqs:us-east-1:123456789012:joins",
            "Fn::GetAtt Queue.Arn (AWS::SQS::Queue: its QueueName)",
        ),
    )
    # The MOCK integration is listed as unsupported and answers as a failing integration.
    ping = app.routes["chat/ping"]
    assert ping.function is None
    assert ping.unavailable == "MockIntegration is a MOCK integration (only AWS_PROXY runs locally)"


def test_cloudformation_json_list_text_exact(cfn_json: Path) -> None:
    assert listing(load_template(cfn_json)) == (
        "route selection: ${request.body.service}/${request.body.action}\n"
        "$connect   AWS_IAM  one-way  ConnectFn  handlers.connect.on_connect  python3.12\n"
        "$default   NONE     one-way  NodeFn     index.handler                nodejs20.x"
        "  unavailable: NodeFn (nodejs20.x) needs --lambda-endpoint\n"
        "chat/join  NONE     one-way  JoinFn     handlers/join.on_join        python3.12"
        "  api key required (not checked)\n"
        "chat/ping  NONE     one-way  -          -                            -         "
        "  unavailable: MockIntegration is a MOCK integration (only AWS_PROXY runs locally)"
    )


def test_node_function_without_endpoint_is_reported_with_the_command(cfn_json: Path) -> None:
    template = load_template(cfn_json)
    default = template.app.routes["$default"]
    assert default.function is None
    assert default.unavailable == "NodeFn (nodejs20.x) needs --lambda-endpoint"
    assert template.warnings() == (
        "route chat/join (JoinRoute) requires an API key on AWS; wsconn local does not check "
        "API keys",
        "route chat/ping answers as a failing integration: MockIntegration is a MOCK "
        "integration (only AWS_PROXY runs locally)",
        "NodeFn (nodejs20.x) is not a Python function wsconn runs itself, so route $default "
        "answers as a failing integration; serve it with `sam local start-lambda -t "
        "template.json` and add --lambda-endpoint http://127.0.0.1:3001",
    )
    # A flag that takes the routes over takes the notes about them away.
    local = Function(PythonTarget("app", "other"), "app-other")
    flagged = with_flags(
        template,
        App(
            routes={
                "$default": Route("$default", local),
                "chat/ping": Route("chat/ping", local),
            }
        ),
    )
    assert flagged.warnings() == template.warnings()[:1]


def test_node_function_with_endpoint_is_a_lambda_target_by_logical_id(cfn_json: Path) -> None:
    template = load_template(cfn_json, lambda_endpoint="http://127.0.0.1:3999")
    default = template.app.routes["$default"]
    assert default.function is not None and default.unavailable is None
    assert default.function.target == LambdaTarget("NodeFn", "http://127.0.0.1:3999")
    assert default.function.runtime == "nodejs20.x"
    # Python functions still run in-process.
    assert isinstance(python_function(template.app.routes["$connect"]).target, PythonTarget)
    assert not any("NodeFn" in note for note in template.notes)


def test_cloudformation_json_list_as_json(cfn_json: Path) -> None:
    template = load_template(cfn_json, lambda_endpoint="http://127.0.0.1:3001")
    data = list_json(template.app.route_selection, template.routes, api="Api", stage="live")
    assert data["api"] == "Api" and data["stage"] == "live"
    assert data["routeSelectionExpression"] == "${request.body.service}/${request.body.action}"
    assert data["routes"][0] == {
        "routeKey": "$connect",
        "authorization": "AWS_IAM",
        "authorizer": None,
        "apiKeyRequired": False,
        "twoWay": False,
        "function": "ConnectFn",
        "handler": "handlers.connect.on_connect",
        "runtime": "python3.12",
        "unavailable": None,
    }
    assert [route["routeKey"] for route in data["routes"]] == [
        "$connect",
        "$default",
        "chat/join",
        "chat/ping",
    ]
    assert data["routes"][2]["apiKeyRequired"] is True
    json.dumps(data)  # plain JSON all through


# --- REQUEST authorizer ---------------------------------------------------------------------------


def test_request_authorizer_on_connect(authorized: Path) -> None:
    template = load_template(authorized)
    app = template.app
    assert app.authorizer is not None
    assert app.authorizer.function.target == PythonTarget("auth", "authorize")
    assert app.authorizer.function.name == "AuthFunction"
    assert app.authorizer.identity_sources == (
        "route.request.header.Auth",
        "route.request.querystring.token",
    )
    assert app.connect_auth == "none"
    assert template.stage is None  # no Stage: the command line's default applies
    assert listing(template) == (
        "route selection: $request.body.action\n"
        "$connect  CUSTOM:Authorizer  one-way  AppFunction  app.handler  python3.11\n"
        "$default  NONE               one-way  AppFunction  app.handler  python3.11"
    )


def test_authorizer_in_another_runtime_without_endpoint_makes_connect_fail(
    tmp_path: Path,
) -> None:
    text = AUTHORIZER_YAML.replace(
        "      Handler: auth.authorize\n      Runtime: python3.11",
        "      Handler: auth.authorize\n      Runtime: nodejs20.x",
    )
    template = load_template(write_app(tmp_path, text, AUTHORIZER_FILES, "template.yaml"))
    connect = template.app.routes["$connect"]
    assert connect.function is None
    assert (
        connect.unavailable
        == "its authorizer Authorizer: AuthFunction (nodejs20.x) needs --lambda-endpoint"
    )
    assert template.app.routes["$default"].function is not None
    assert template.warnings() == (
        "AuthFunction (nodejs20.x) is not a Python function wsconn runs itself, so route "
        "$connect answers as a failing integration; serve it with `sam local start-lambda -t "
        "template.yaml` and add --lambda-endpoint http://127.0.0.1:3001",
    )
    # --authorizer in its place: $connect runs its function again.
    mine = Function(PythonTarget("auth", "authorize"), "auth-authorize")
    flagged = with_flags(template, App(authorizer=Authorizer(mine, ("route.request.header.A",))))
    assert flagged.app.routes["$connect"].function is not None
    assert flagged.app.authorizer is not None and flagged.app.authorizer.function == mine
    assert flagged.warnings() == ()


def test_authorizer_identity_source_outside_header_and_query_is_noted(tmp_path: Path) -> None:
    text = AUTHORIZER_YAML.replace(
        "route.request.querystring.token]", "route.request.querystring.token, context.x]"
    )
    template = load_template(write_app(tmp_path, text, AUTHORIZER_FILES, "template.yaml"))
    assert template.notes == (
        "Authorizer: IdentitySource context.x is not checked locally (only "
        "route.request.header.* and route.request.querystring.* are)",
    )


# --- --env-vars, exactly as SAM CLI ----------------------------------------------------------------


def test_env_vars_parameters_apply_to_all_and_the_function_entry_wins(
    sam_chat: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(
        json.dumps(
            {
                "Parameters": {"TABLE_NAME": "local_table", "NOT_DECLARED": "x"},
                "SendMessageFunction": {"TABLE_NAME": "send_table", "LOG_LEVEL": 3},
            }
        )
    )
    template = load_template(sam_chat, env_vars=read_env_vars(env_file))
    connect = python_function(template.app.routes["$connect"]).env
    send = python_function(template.app.routes["sendmessage"]).env
    assert connect["TABLE_NAME"] == "local_table"
    assert send["TABLE_NAME"] == "send_table"  # the function's own entry wins
    assert send["LOG_LEVEL"] == "3"  # stringified as SAM CLI does
    # Only variables the template declares are set.
    assert "NOT_DECLARED" not in connect and "NOT_DECLARED" not in send
    # Overridden values are not substitutions of the template's references.
    assert template.substitutions == ()


def test_env_vars_by_function_name(cfn_json: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"chat-join": {"QUEUE": "http://127.0.0.1:9324/q"}}))
    template = load_template(cfn_json, env_vars=read_env_vars(env_file))
    assert python_function(template.app.routes["chat/join"]).env["QUEUE"] == (
        "http://127.0.0.1:9324/q"
    )


def test_shell_environment_sets_declared_variables_below_env_vars(sam_chat: Path) -> None:
    template = load_template(
        sam_chat,
        shell_env={"GREETING": "from shell", "TABLE_NAME": "shell_table", "HOME": "/root"},
        env_vars={"Parameters": {"TABLE_NAME": "file_table"}},
    )
    env = python_function(template.app.routes["$connect"]).env
    assert env["GREETING"] == "from shell"
    assert env["TABLE_NAME"] == "file_table"
    assert "HOME" not in env
    assert (
        "OnConnectFunction: GREETING comes from your shell's environment (as with SAM CLI)"
        in template.notes
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", r"--env-vars .*env.json line 1: Expecting property name"),
        ("[1]", r"expected a JSON object of objects"),
        ('{"Fn": "x"}', r"'Fn' must map to an object of variables"),
    ],
)
def test_env_vars_file_errors(tmp_path: Path, content: str, message: str) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        read_env_vars(env_file)
    assert raised.value.exit_code == ExitCode.CONFIG


def test_env_vars_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read --env-vars .*nope.json: No such file"):
        read_env_vars(tmp_path / "nope.json")


def test_env_value_stringifies_as_sam() -> None:
    assert [env_value(v) for v in (True, False, 3, 1.5, None, [1], {"a": 1}, "x")] == [
        "true",
        "false",
        "3",
        "1.5",
        "",
        "",
        "",
        "x",
    ]


# --- --parameter-overrides ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["TableName=chat Stage=dev"], {"TableName": "chat", "Stage": "dev"}),
        (["A=1", "B=2 A=3"], {"A": "3", "B": "2"}),
        (['Greeting="hello world" Name=x'], {"Greeting": "hello world", "Name": "x"}),
        (["Greeting='single quoted' Name=y"], {"Greeting": "single quoted", "Name": "y"}),
        ([r"Greeting=escaped\ space"], {"Greeting": "escaped space"}),
        ([r'Say="a \"quoted\" word"'], {"Say": 'a "quoted" word'}),
        (["Url=https://x.test/a?b=c,d Empty="], {"Url": "https://x.test/a?b=c,d", "Empty": ""}),
        (
            ["ParameterKey=Table,ParameterValue=chat ParameterKey=Stage,ParameterValue=dev"],
            {"Table": "chat", "Stage": "dev"},
        ),
        (['"Quoted"=key'], {"Quoted": "key"}),
        (["  Spaced=1    Out=2  "], {"Spaced": "1", "Out": "2"}),
        ([], {}),
    ],
)
def test_parameter_overrides_as_sam_accepts(given: list[str], expected: dict[str, str]) -> None:
    assert parse_parameter_overrides(given) == expected


@pytest.mark.parametrize("bad", ["Table", "A=1 oops", "=x", 'A="unterminated', "A-B=1"])
def test_parameter_overrides_malformed(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"--parameter-overrides: .* is not Key=Value"):
        parse_parameter_overrides([bad])


def test_parameter_without_default_is_an_error_where_it_is_needed(sam_chat: Path) -> None:
    text = sam_chat.read_text().replace(
        "  TableName:\n    Type: String\n    Default: chat_connections\n",
        "  TableName:\n    Type: String\n",
    )
    sam_chat.write_text(text)
    # The table's name is only an environment value: it becomes "" and is listed...
    template = load_template(sam_chat)
    assert python_function(template.app.routes["$connect"]).env["TABLE_NAME"] == ""
    unresolved = [s for s in template.substitutions if s.function == "OnConnectFunction"]
    assert unresolved == [
        Substitution(
            "OnConnectFunction",
            "TABLE_NAME",
            "",
            "parameter TableName has no Default: give it with --parameter-overrides "
            "TableName=... (set TABLE_NAME with --env-vars)",
        )
    ]
    # ...and an override fills it.
    template = load_template(sam_chat, parameter_overrides={"TableName": "t"})
    assert python_function(template.app.routes["$connect"]).env["TABLE_NAME"] == "t"


# --- intrinsics -----------------------------------------------------------------------------------


def minimal(route_extra: str = "", function_extra: str = "", head: str = "") -> str:
    """A one-route WebSocket API whose function and route take extra YAML lines."""
    return f"""\
{head}Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {{ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.action}}
  Route:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      Target: !Join [/, [integrations, !Ref Integ]]
{route_extra}  Integ:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{Fn.Arn}}/invocations
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Handler: app.handler
      Runtime: python3.11
{function_extra}"""


def load_minimal(tmp_path: Path, text: str, **kwargs: Any) -> TemplateApp:
    return load_template(
        write_app(tmp_path, text, {"app.py": "def handler(e, c): pass\n"}, "template.yaml"),
        **kwargs,
    )


def env_of(template: TemplateApp) -> dict[str, str]:
    return dict(python_function(template.app.routes["$default"]).env)


def test_intrinsics_in_environment_values(tmp_path: Path) -> None:
    head = """\
Parameters:
  Names: {Type: CommaDelimitedList, Default: "a, b,c"}
  Env: {Type: String, Default: dev}
Mappings:
  Sizes:
    dev: {Memory: 256}
Conditions:
  IsDev: !Equals [!Ref Env, dev]
  NotDev: !Not [!Condition IsDev]
  Both: !And [!Condition IsDev, !Equals [1, "1"]]
  Either: !Or [!Condition NotDev, !Equals [a, b]]
"""
    function_extra = """\
      MemorySize: !FindInMap [Sizes, !Ref Env, Memory]
      Environment:
        Variables:
          JOINED: !Join [':', !Ref Names]
          SELECTED: !Select [1, !Ref Names]
          SPLIT: !Select [2, !Split [',', 'x,y,z']]
          SUB_MAP: !Sub ['${A}-${B}-${!Literal}', {A: !Ref Env, B: !GetAtt Fn.Arn}]
          BASE64: !Base64 hi
          IF_BOTH: !If [Both, yes-both, no-both]
          IF_EITHER: !If [Either, yes-either, no-either]
          REMOVED: !If [NotDev, present, !Ref AWS::NoValue]
          NUMBER: 8080
          FLAG: true
          LONG_FORM: {"Fn::Join": ["", ["a", {"Ref": "Env"}]]}
          API: !Ref Api
          API_URL: !GetAtt Api.ApiEndpoint
"""
    template = load_minimal(tmp_path, minimal(head=head, function_extra=function_extra))
    assert env_of(template) == {
        "JOINED": "a:b:c",
        "SELECTED": "b",
        "SPLIT": "z",
        "SUB_MAP": "dev-arn:aws:lambda:us-east-1:123456789012:function:Fn-${Literal}",
        "BASE64": "aGk=",
        "IF_BOTH": "yes-both",
        "IF_EITHER": "no-either",
        "NUMBER": "8080",
        "FLAG": "true",
        "LONG_FORM": "adev",
        "API": "Api",
        "API_URL": "wss://Api.execute-api.us-east-1.amazonaws.com",
    }
    assert python_function(template.app.routes["$default"]).memory_mb == 256


def test_ref_to_the_api_is_the_gateways_api_id(tmp_path: Path) -> None:
    function_extra = """\
      Environment:
        Variables:
          API: !Ref Api
          URL: !Sub 'https://${Api}.execute-api.${AWS::Region}.amazonaws.com/dev'
"""
    template = load_minimal(tmp_path, minimal(function_extra=function_extra), api_id="k3x9q1z7ab")
    assert env_of(template) == {
        "API": "k3x9q1z7ab",
        "URL": "https://k3x9q1z7ab.execute-api.us-east-1.amazonaws.com/dev",
    }
    assert template.app.routes["$default"].function is not None  # routes still match the API


def test_unresolvable_environment_value_becomes_empty_and_is_listed(tmp_path: Path) -> None:
    function_extra = """\
      Environment:
        Variables:
          SHARED: !ImportValue shared-table
          ROLE: !GetAtt FnRole.Arn
"""
    template = load_minimal(tmp_path, minimal(function_extra=function_extra))
    assert env_of(template) == {"SHARED": "", "ROLE": ""}
    assert template.substitutions == (
        Substitution(
            "Fn",
            "SHARED",
            "",
            "Fn::ImportValue is not resolved by wsconn local (set SHARED with --env-vars)",
        ),
        Substitution(
            "Fn",
            "ROLE",
            "",
            "Fn::GetAtt FnRole.Arn: no resource 'FnRole' (set ROLE with --env-vars)",
        ),
    )


def test_resource_condition_false_removes_the_route(tmp_path: Path) -> None:
    head = "Parameters:\n  Echo: {Type: String, Default: 'no'}\nConditions:\n  WithEcho: !Equals [!Ref Echo, 'yes']\n"
    route_extra = """\
  EchoRoute:
    Type: AWS::ApiGatewayV2::Route
    Condition: WithEcho
    Properties:
      ApiId: !Ref Api
      RouteKey: echo
      Target: !Join [/, [integrations, !Ref Integ]]
"""
    text = minimal(head=head, route_extra=route_extra)
    assert list(load_minimal(tmp_path, text).app.routes) == ["$default"]
    assert list(load_minimal(tmp_path, text, parameter_overrides={"Echo": "yes"}).app.routes) == [
        "$default",
        "echo",
    ]


def test_lambda_alias_integration_uri(tmp_path: Path) -> None:
    text = minimal(function_extra="      AutoPublishAlias: live\n").replace(
        "${Fn.Arn}/invocations", "${FnAliaslive}/invocations"
    )
    route = load_minimal(tmp_path, text).app.routes["$default"]
    assert route.function is not None and route.function.name == "Fn"


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("app.handler", ("app", "handler")),
        ("pkg/mod.fn", ("pkg.mod", "fn")),
        ("pkg.mod.fn", ("pkg.mod", "fn")),
        ("src/pkg/mod.lambda_handler", ("src.pkg.mod", "lambda_handler")),
    ],
)
def test_python_handler_forms_lambda_accepts(handler: str, expected: tuple[str, str]) -> None:
    assert python_handler(handler, "Fn") == expected


@pytest.mark.parametrize("handler", ["handler", "app.", ".handler", "my-app.handler", "app.x y"])
def test_python_handler_malformed(handler: str) -> None:
    with pytest.raises(ConfigError, match=r"Fn: Handler .* is not MODULE.FUNCTION"):
        python_handler(handler, "Fn")


# --- errors: one line, the place, exit 8 ----------------------------------------------------------


def assert_config_error(tmp_path: Path, text: str, message: str, **kwargs: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        load_minimal(tmp_path, text, **kwargs)
    assert raised.value.exit_code == ExitCode.CONFIG
    assert raised.value.message == message
    assert "\n" not in raised.value.message


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    text = minimal().replace(
        "      RouteKey: $default\n", "      RouteKey: $default\n     Bad: [\n"
    )
    with pytest.raises(ConfigError, match=r"template.yaml line 1[0-9]: ") as raised:
        load_minimal(tmp_path, text)
    assert raised.value.exit_code == ExitCode.CONFIG


def test_unknown_short_tag_names_the_line(tmp_path: Path) -> None:
    text = minimal().replace("RouteKey: $default", "RouteKey: !Reff x")
    with pytest.raises(ConfigError, match=r"template.yaml line 9: unknown tag !Reff$"):
        load_minimal(tmp_path, text)


def test_json_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "template.json").write_text('{\n  "Resources": {\n    "A": }\n}\n')
    with pytest.raises(ConfigError, match=r"template.json line 3: Expecting value"):
        load_template(tmp_path)


def test_not_a_template(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text("just: text\n")
    with pytest.raises(
        ConfigError, match=r"not a CloudFormation template \(no Resources section\)"
    ):
        load_template(tmp_path)


def test_no_template_in_directory(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"no template.yaml, template.yml, template.json in that directory"
    ):
        find_template(tmp_path)
    with pytest.raises(ConfigError, match=r"--template .*nope.yaml: no such file or directory"):
        find_template(tmp_path / "nope.yaml")


def test_http_api_is_not_a_websocket_api(tmp_path: Path) -> None:
    text = minimal().replace("ProtocolType: WEBSOCKET", "ProtocolType: HTTP")
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: not a WebSocket API: Api (ProtocolType HTTP); wsconn local runs an "
        "AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET",
    )


def test_rest_api_only_is_not_a_websocket_api(tmp_path: Path) -> None:
    text = "Resources:\n  Rest:\n    Type: AWS::Serverless::Api\n    Properties: {StageName: x}\n"
    (tmp_path / "template.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"not a WebSocket API: Rest \(AWS::Serverless::Api\)"):
        load_template(tmp_path)


def test_no_api_at_all(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text("Resources:\n  T: {Type: AWS::SQS::Queue}\n")
    with pytest.raises(
        ConfigError, match=r"template.yaml: no WebSocket API \(an AWS::ApiGatewayV2"
    ):
        load_template(tmp_path)


def test_several_apis_need_api_and_no_such_api(tmp_path: Path) -> None:
    second = "  Api2:\n    Type: AWS::ApiGatewayV2::Api\n    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.op}\n"
    text = minimal(route_extra=second)
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: 2 WebSocket APIs (Api, Api2): choose one with --api LOGICAL_ID",
    )
    assert load_minimal(tmp_path, text, api="Api2").app.route_selection == "$request.body.op"
    assert load_minimal(tmp_path, text, api="Api2").app.routes == {}
    assert_config_error(
        tmp_path, text, "template.yaml: no API 'Nope' (WebSocket APIs: Api, Api2)", api="Nope"
    )
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: Fn is not a WebSocket API (AWS::Serverless::Function)",
        api="Fn",
    )


def test_target_naming_no_integration(tmp_path: Path) -> None:
    text = minimal().replace("!Ref Integ]]", "Missing]]")
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: Route: Target 'integrations/Missing' names no "
        "AWS::ApiGatewayV2::Integration in the template",
    )


def test_target_not_an_integration_path(tmp_path: Path) -> None:
    text = minimal().replace("Target: !Join [/, [integrations, !Ref Integ]]", "Target: Integ")
    assert_config_error(
        tmp_path, text, "template.yaml: Route: Target 'Integ' is not integrations/<IntegrationId>"
    )


def test_integration_uri_naming_a_function_outside_the_template(tmp_path: Path) -> None:
    text = minimal().replace(
        "${Fn.Arn}", "arn:aws:lambda:us-east-1:123456789012:function:elsewhere"
    )
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: Integ: IntegrationUri invokes function 'elsewhere', which is not in the "
        "template",
    )


def test_ref_to_nothing(tmp_path: Path) -> None:
    text = minimal().replace("${Fn.Arn}", "${Nothing.Arn}")
    assert_config_error(
        tmp_path,
        text,
        "template.yaml: Integ: IntegrationUri: Fn::GetAtt Nothing.Arn: no resource 'Nothing'",
    )


def test_route_key_twice(tmp_path: Path) -> None:
    twice = """\
  Route2:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $default, Target: !Sub 'integrations/${Integ}'}
"""
    assert_config_error(
        tmp_path,
        minimal(route_extra=twice),
        "template.yaml: Route2: route key '$default' is also Route's",
    )


def test_missing_code_directory(tmp_path: Path) -> None:
    text = minimal().replace("CodeUri: .", "CodeUri: src/")
    assert_config_error(
        tmp_path,
        text,
        f"template.yaml: Fn: CodeUri 'src/': no such directory ({tmp_path / 'src'})",
    )


def test_s3_code_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    text = minimal().replace("CodeUri: .", "CodeUri: s3://bucket/key.zip")
    route = load_minimal(tmp_path, text).app.routes["$default"]
    assert route.function is None
    assert route.unavailable == "Fn's CodeUri is S3, not a local directory"
    text = minimal().replace("CodeUri: .", "CodeUri: {Bucket: b, Key: k}")
    assert load_minimal(tmp_path, text).app.routes["$default"].unavailable == (
        "Fn's CodeUri is S3, not a local directory"
    )


def test_missing_route_selection_expression(tmp_path: Path) -> None:
    text = minimal().replace(", RouteSelectionExpression: $request.body.action", "")
    assert_config_error(
        tmp_path, text, "template.yaml: Api: a WebSocket API needs a RouteSelectionExpression"
    )


def test_route_response_without_selection_expression_is_one_way_and_noted(tmp_path: Path) -> None:
    response = """\
  Response:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Api, RouteId: !Ref Route, RouteResponseKey: $default}
"""
    template = load_minimal(tmp_path, minimal(route_extra=response))
    assert template.app.routes["$default"].two_way is False
    assert template.warnings() == (
        "route $default (Route) has a RouteResponse but no RouteResponseSelectionExpression: "
        "one-way, as on AWS",
    )


def test_flag_routes_win_for_their_keys(sam_chat: Path) -> None:
    template = load_template(sam_chat)
    local = Function(PythonTarget("experiment", "send"), "experiment-send")
    merged = with_flags(
        template, App(routes={"sendmessage": Route("sendmessage", local, two_way=True)})
    )
    assert merged.app.routes["sendmessage"].function == local
    assert merged.app.routes["$connect"] == template.app.routes["$connect"]
    assert merged.app.route_selection == "$request.body.action"
    assert listing(merged).splitlines()[-1] == (
        "sendmessage  NONE  two-way  experiment-send       experiment:send    -"
    )


def test_flags_on_top_of_a_template(sam_chat: Path) -> None:
    template = load_template(sam_chat)
    flag_function = Function(PythonTarget("mine", "authorize"), "mine-authorize", env={"A": "1"})
    merged = with_flags(
        template,
        App(authorizer=Authorizer(flag_function, ("route.request.header.X",))),
        two_way=["sendmessage"],
        env={"TABLE_NAME": "from-flag", "EXTRA": "x"},
        handler_timeout=5,
        route_selection="$request.body.op",
        connect_auth="iam",
    )
    app = merged.app
    assert app.route_selection == "$request.body.op"
    assert app.connect_auth == "iam"
    assert app.authorizer is not None and app.authorizer.function == flag_function
    send = python_function(app.routes["sendmessage"])
    assert app.routes["sendmessage"].two_way and app.routes["echo"].two_way
    # --env wins over everything for every template function; --handler-timeout caps Timeout.
    assert send.env["TABLE_NAME"] == "from-flag" and send.env["EXTRA"] == "x"
    assert send.timeout == 5 and app.integration_timeout == 5
    longer = with_flags(template, App(), handler_timeout=60)
    assert longer.app.integration_timeout == 60
    assert python_function(longer.app.routes["$disconnect"]).timeout == 60
    assert python_function(longer.app.routes["$connect"]).timeout == 10
    assert [line.split()[2] for line in listing(merged).splitlines()[1:]] == [
        "one-way",
        "one-way",
        "two-way",
        "two-way",
    ]
    everything = with_flags(template, App(), two_way=["*"])
    assert {key for key, route in everything.app.routes.items() if route.two_way} == {
        "echo",
        "sendmessage",
    }


@pytest.mark.parametrize(
    ("two_way", "message"),
    [
        ("nope", "--two-way nope: the template has no route 'nope'"),
        ("$connect", "--two-way $connect: only message routes answer the caller"),
    ],
)
def test_two_way_flag_names_a_template_route(sam_chat: Path, two_way: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        with_flags(load_template(sam_chat), App(), two_way=[two_way])
    assert raised.value.message == message


def test_integration_timeout_in_millis(tmp_path: Path) -> None:
    text = minimal(function_extra="      Timeout: 20\n").replace(
        "      IntegrationType: AWS_PROXY\n",
        "      IntegrationType: AWS_PROXY\n      TimeoutInMillis: 1500\n",
    )
    template = load_minimal(tmp_path, text)
    assert template.app.integration_timeout == 1.5
    assert python_function(template.app.routes["$default"]).timeout == 20
    assert template.warnings() == ()
    # Integrations that wait differently: the shortest for every route, said so.
    other = """\
  Echo:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: echo, Target: !Sub 'integrations/${Integ2}'}
  Integ2:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn.Arn}/invocations
"""
    text = minimal(route_extra=other).replace(
        "      IntegrationType: AWS_PROXY\n      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn.Arn}/invocations\n  Fn:",
        "      IntegrationType: AWS_PROXY\n      TimeoutInMillis: 5000\n      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn.Arn}/invocations\n  Fn:",
    )
    template = load_minimal(tmp_path, text)
    assert template.app.integration_timeout == 5
    assert template.warnings() == (
        "integrations wait differently (Integ 5 s, Integ2 29 s): every route waits 5 s here",
    )


# --- Python runtimes ------------------------------------------------------------------------------


def test_runtime_other_than_the_interpreter_uses_its_python_from_path(sam_chat: Path) -> None:
    app = load_template(sam_chat).app  # python3.11 everywhere
    found = {"python3.11": "/opt/py311/bin/python3.11"}
    same, notes = python_runtimes(app, "3.11", explicit=False, which=found.get)
    assert same == app and notes == ()
    switched, notes = python_runtimes(app, "3.12", explicit=False, which=found.get)
    assert notes == (
        "OnConnectFunction, OnDisconnectFunction, SendMessageFunction declare python3.11: "
        "running them with /opt/py311/bin/python3.11 (from PATH; --python chooses one "
        "interpreter for all)",
    )
    assert {route.function.python for route in switched.routes.values() if route.function} == {
        "/opt/py311/bin/python3.11"
    }


def test_a_python_on_path_that_does_not_run_is_not_chosen(
    authorized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pyenv shim for an installed but unselected version is on PATH and exits 127."""
    import os
    import sys

    app = load_template(authorized).app  # python3.11
    shim = tmp_path / "python3.11"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert python_runtimes(app, "3.13", explicit=False) == (app, ())
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # now one that runs
    switched, notes = python_runtimes(app, "3.13", explicit=False)
    assert switched.authorizer is not None
    assert switched.authorizer.function.python == str(shim)
    assert notes and str(shim) in notes[0]


def test_runtime_mismatch_with_explicit_python_or_none_on_path(authorized: Path) -> None:
    app = load_template(authorized).app
    # An explicit --python runs everything; so does the default when PATH has no python3.X.
    assert python_runtimes(app, "3.13", explicit=True, which=lambda name: "/x/" + name) == (app, ())
    assert python_runtimes(app, "3.13", explicit=False, which=lambda name: None) == (app, ())
    switched, _ = python_runtimes(app, "3.13", explicit=False, which=lambda name: "/x/" + name)
    assert switched.authorizer is not None
    assert switched.authorizer.function.python == "/x/python3.11"


def test_startup_lines(sam_chat: Path) -> None:
    template = load_template(sam_chat, parameter_overrides={"Nope": "1"})
    assert startup_lines(template) == [
        "template.yaml: API ChatApi, routes $connect, $disconnect, echo, sendmessage "
        "(--list shows them)",
        "environment values that name what wsconn does not run (point them at local services "
        "with --env-vars):",
        "  TABLE_NAME=chat_connections (OnConnectFunction, OnDisconnectFunction, "
        "SendMessageFunction)  <- Ref ConnectionsTable (AWS::DynamoDB::Table: its TableName)",
        "WARNING: --parameter-overrides Nope: the template declares no such parameter; ignored",
    ]


def test_several_stages_need_stage(tmp_path: Path) -> None:
    stages = """\
  Dev:
    Type: AWS::ApiGatewayV2::Stage
    Properties: {ApiId: !Ref Api, StageName: dev}
  Prod:
    Type: AWS::ApiGatewayV2::Stage
    Properties: {ApiId: !Ref Api, StageName: prod}
"""
    template = load_minimal(tmp_path, minimal(route_extra=stages))
    assert template.stage is None
    assert template.warnings() == ("the API has 2 stages (dev, prod): give --stage to pick one",)
    chosen = with_flags(template, App(), stage="prod")
    assert chosen.stage == "prod" and chosen.warnings() == ()
