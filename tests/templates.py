"""WebSocket API templates in each style users write them, for the template reader's tests.

Each is a complete template as it would be deployed; `write_app` lays one out with the handler
files its functions name, the way `sam init` would.
"""

from __future__ import annotations

import json
from pathlib import Path

# SAM, YAML with short tags, Globals, a table the functions reach through an environment value,
# `${Fn.Arn}` integration URIs, a two-way route, one Stage.
SAM_CHAT = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: chat over WebSocket

Parameters:
  TableName:
    Type: String
    Default: chat_connections
  Stage:
    Type: String
    Default: prod
    AllowedValues: [dev, prod]

Conditions:
  IsProd: !Equals [!Ref Stage, prod]

Globals:
  Function:
    Runtime: python3.11
    Timeout: 10
    MemorySize: 256
    Environment:
      Variables:
        TABLE_NAME: !Ref ConnectionsTable
        LOG_LEVEL: !If [IsProd, INFO, DEBUG]

Resources:
  ChatApi:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: chat
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: "$request.body.action"

  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref ChatApi
      RouteKey: $connect
      AuthorizationType: NONE
      Target: !Join ['/', [integrations, !Ref ConnectInteg]]
  ConnectInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${OnConnectFunction.Arn}/invocations

  DisconnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref ChatApi
      RouteKey: $disconnect
      Target: !Join ['/', [integrations, !Ref DisconnectInteg]]
  DisconnectInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${OnDisconnectFunction.Arn}/invocations

  SendRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref ChatApi
      RouteKey: sendmessage
      Target: !Sub integrations/${SendInteg}
  SendInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${SendMessageFunction.Arn}/invocations

  EchoRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref ChatApi
      RouteKey: echo
      RouteResponseSelectionExpression: $default
      Target: !Sub integrations/${EchoInteg}
  EchoResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties:
      ApiId: !Ref ChatApi
      RouteId: !Ref EchoRoute
      RouteResponseKey: $default
  EchoInteg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref ChatApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${SendMessageFunction.Arn}/invocations

  Deployment:
    Type: AWS::ApiGatewayV2::Deployment
    DependsOn: [ConnectRoute, SendRoute, DisconnectRoute, EchoRoute]
    Properties:
      ApiId: !Ref ChatApi
  ProdStage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      StageName: !Ref Stage
      DeploymentId: !Ref Deployment
      ApiId: !Ref ChatApi

  ConnectionsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Ref TableName
      AttributeDefinitions: [{AttributeName: connectionId, AttributeType: S}]
      KeySchema: [{AttributeName: connectionId, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST

  OnConnectFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: onconnect/
      Handler: app.handler
      Environment:
        Variables:
          GREETING: hello
  OnDisconnectFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ondisconnect/
      Handler: app.handler
      Timeout: 60
  SendMessageFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: sendmessage/
      Handler: chat/send.handler
      MemorySize: 512
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref TableName}
        - Statement:
            - Effect: Allow
              Action: [execute-api:ManageConnections]
              Resource: !Sub arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${ChatApi}/*

Outputs:
  WebSocketURI:
    Value: !Join ['', ['wss://', !Ref ChatApi, '.execute-api.', !Ref 'AWS::Region', '.amazonaws.com/', !Ref Stage]]
"""

SAM_CHAT_FILES = {
    "onconnect/app.py": "def handler(event, context):\n    return {'statusCode': 200}\n",
    "ondisconnect/app.py": "def handler(event, context):\n    return {'statusCode': 200}\n",
    "sendmessage/chat/__init__.py": "",
    "sendmessage/chat/send.py": "def handler(event, context):\n    return {'statusCode': 200}\n",
}


# Plain CloudFormation in JSON: AWS::Lambda::Function with Code as a local path, long-form
# intrinsics, an AWS_IAM $connect, a Node.js function on $default, a MOCK integration.
CFN_JSON = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "Api": {
            "Type": "AWS::ApiGatewayV2::Api",
            "Properties": {
                "Name": "iam-api",
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": "${request.body.service}/${request.body.action}",
            },
        },
        "ConnectRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "RouteKey": "$connect",
                "AuthorizationType": "AWS_IAM",
                "Target": {"Fn::Join": ["/", ["integrations", {"Ref": "ConnectIntegration"}]]},
            },
        },
        "ConnectIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": {
                    "Fn::Join": [
                        "",
                        [
                            "arn:",
                            {"Ref": "AWS::Partition"},
                            ":apigateway:",
                            {"Ref": "AWS::Region"},
                            ":lambda:path/2015-03-31/functions/",
                            {"Fn::GetAtt": ["ConnectFn", "Arn"]},
                            "/invocations",
                        ],
                    ]
                },
            },
        },
        "JoinRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "RouteKey": "chat/join",
                "ApiKeyRequired": True,
                "Target": {"Fn::Sub": "integrations/${JoinIntegration}"},
            },
        },
        "JoinIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": {
                    "Fn::Sub": [
                        "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
                        "arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:${Name}"
                        "/invocations",
                        {"Name": {"Ref": "JoinFn"}},
                    ]
                },
            },
        },
        "DefaultRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "RouteKey": "$default",
                "Target": {"Fn::Sub": "integrations/${DefaultIntegration}"},
            },
        },
        "DefaultIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": {
                    "Fn::Sub": "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/"
                    "functions/${NodeFn.Arn}/invocations"
                },
            },
        },
        "PingRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "Api"},
                "RouteKey": "chat/ping",
                "Target": {"Fn::Sub": "integrations/${MockIntegration}"},
            },
        },
        "MockIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {"ApiId": {"Ref": "Api"}, "IntegrationType": "MOCK"},
        },
        "Stage": {
            "Type": "AWS::ApiGatewayV2::Stage",
            "Properties": {"ApiId": {"Ref": "Api"}, "StageName": "live"},
        },
        "ConnectFn": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Code": "src",
                "Handler": "handlers.connect.on_connect",
                "Runtime": "python3.12",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
            },
        },
        "JoinFn": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": "chat-join",
                "Code": "src",
                "Handler": "handlers/join.on_join",
                "Runtime": "python3.12",
                "Timeout": 45,
                "Environment": {"Variables": {"QUEUE": {"Fn::GetAtt": ["Queue", "Arn"]}}},
            },
        },
        "NodeFn": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Code": "node",
                "Handler": "index.handler",
                "Runtime": "nodejs20.x",
            },
        },
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "joins"}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
    },
}

CFN_FILES = {
    "src/handlers/__init__.py": "",
    "src/handlers/connect.py": "def on_connect(event, context):\n    return {'statusCode': 200}\n",
    "src/handlers/join.py": "def on_join(event, context):\n    return {'statusCode': 200}\n",
    "node/index.js": "exports.handler = async (event) => ({statusCode: 200, body: event.body});\n",
}


# A REQUEST authorizer on $connect, the one function on every route (the single-Lambda style).
AUTHORIZER_YAML = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: authorized
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: $request.body.action
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $connect
      AuthorizationType: CUSTOM
      AuthorizerId: !Ref Authorizer
      Target: !Sub integrations/${Integration}
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      Target: !Sub integrations/${Integration}
  Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${AppFunction.Arn}/invocations
  Authorizer:
    Type: AWS::ApiGatewayV2::Authorizer
    Properties:
      ApiId: !Ref Api
      Name: token
      AuthorizerType: REQUEST
      AuthorizerUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${AuthFunction.Arn}/invocations
      IdentitySource: [route.request.header.Auth, route.request.querystring.token]
  AppFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Handler: app.handler
      Runtime: python3.11
  AuthFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: .
      Handler: auth.authorize
      Runtime: python3.11
"""

AUTHORIZER_FILES = {
    "app.py": "def handler(event, context):\n    return {'statusCode': 200}\n",
    "auth.py": "def authorize(event, context):\n    return {}\n",
}


def write_app(
    root: Path, template: str | dict[str, object], files: dict[str, str], name: str
) -> Path:
    """The template (YAML text, or a dict written as JSON) and its code files under ROOT."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    text = template if isinstance(template, str) else json.dumps(template, indent=2)
    (root / name).write_text(text)
    return root / name
