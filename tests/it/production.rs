//! Production paths: Bedrock through the real SDK, the API key from Secrets Manager, callers
//! scoped by their JWT, and the template checked against the code.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;
use serde_yaml::Value as Yaml;

use crate::support::{bedrock_app, repo, sdk_config, Req, TestEnv};

#[tokio::test]
async fn bedrock_plays_the_seed() {
    let env = TestEnv::new().await;
    let app = bedrock_app(&env, &[("SYSTEM_PROMPT", "Be brief.")]).await;
    for (name, reply) in [
        (
            "1-collin-hello",
            "Hello Collin! How can I assist you today?",
        ),
        ("2-collin-what-is-my-name", "Your name is Collin."),
    ] {
        let (status, body) = Req::file(&format!("http-api/{name}.json"))
            .call_json(&app)
            .await;
        assert_eq!(
            (status, body["reply"].as_str()),
            (200, Some(reply)),
            "{body}"
        );
    }
    let requests = env.model.requests().await;
    let second = &requests[1];
    assert_eq!(second["path"], "/model/amazon.nova-lite-v1%3A0/converse");
    assert!(
        second["authorization"]
            .as_str()
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 "),
        "signed with SigV4"
    );
    // Nova takes prompt caching (PROMPT_CACHE=auto): a cache point after the system prompt and
    // after the newest run (docs/context.md).
    let point = json!({"cachePoint": {"type": "default"}});
    assert_eq!(
        second["body"]["system"],
        json!([{"text": "Be brief."}, point])
    );
    let messages = second["body"]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(messages[1]["content"][1], point);
    assert_eq!(messages[2]["content"].as_array().unwrap().len(), 1);
    // Reported back: the first turn wrote the cache, the second read the system prompt from it.
    let usage = &requests[1]["usage"];
    assert!(
        usage["cacheReadInputTokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );

    // PROMPT_CACHE=off: no cache points.
    let env = TestEnv::new().await;
    let app = bedrock_app(&env, &[("PROMPT_CACHE", "off")]).await;
    Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    let requests = env.model.requests().await;
    assert!(!requests[0]["body"].to_string().contains("cachePoint"));
}

#[tokio::test]
async fn bedrock_failures_map_like_openai_ones() {
    let env = TestEnv::new().await;
    let app = bedrock_app(&env, &[("MODEL_TIMEOUT_SECS", "1")]).await;
    for (steps, status, code) in [
        (json!([{"status": 400}]), 502, "model_error"),
        (json!([{"empty": true}]), 502, "model_error"),
        (json!([{"hang": 3}]), 504, "model_timeout"),
    ] {
        env.model.script(steps.clone()).await;
        let (got, body) = Req::file("http-api/1-collin-hello.json")
            .call_json(&app)
            .await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{steps}"
        );
    }
    // Throttling is retried by the SDK and then succeeds.
    env.model.script(json!([{"status": 429}])).await;
    let (status, _) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(env.session_count().await, 1);
    let session = env.keys().await.into_iter().find(|k| !k.contains('#'));
    assert_eq!(
        env.stored_runs(&session.unwrap()).await.len(),
        1,
        "only the answered turn was stored"
    );
}

#[tokio::test]
async fn the_openai_key_comes_from_secrets_manager() {
    let env = TestEnv::new().await;
    let sdk = sdk_config(&env.endpoint).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let arn = secrets
        .create_secret()
        .name(format!("{}-openai", env.table))
        .secret_string(r#"{"OPENAI_API_KEY": "sk-from-secrets-manager"}"#)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let config = env.config(&[("OPENAI_API_KEY_SECRET_ID", arn.as_str())]);
    let app = session_chat::build_app_with(&config, &sdk).await.unwrap();
    let (status, _) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        env.model.requests().await[0]["authorization"],
        "Bearer sk-from-secrets-manager"
    );
    assert!(!format!("{config:?}").contains("sk-from"));

    // A missing secret stops the start, naming the secret but no value.
    let config = env.config(&[("OPENAI_API_KEY_SECRET_ID", "no-such-secret")]);
    let Err(e) = session_chat::build_app_with(&config, &sdk).await else {
        panic!("started without its secret");
    };
    assert!(e.to_string().contains("no-such-secret"), "{e}");
}

/// A chat event as API Gateway sends it after its JWT authorizer accepted a token for `sub`.
fn as_user(name: &str, sub: Option<&str>) -> Req {
    let req = Req::file(name);
    match sub {
        Some(sub) => req.claims(json!({"sub": sub, "iss": "https://issuer.example.com"})),
        None => req,
    }
}

#[tokio::test]
async fn jwt_callers_only_see_their_own_sessions() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("AUTH_MODE", "JWT")]).await;
    let (status, _) = as_user("http-api/1-collin-hello.json", Some("alice"))
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    // Bob uses the same session id and cannot read Alice's memory.
    let (_, bob) = as_user("http-api/2-collin-what-is-my-name.json", Some("bob"))
        .call_json(&app)
        .await;
    assert_eq!(bob["reply"], "I don't know your name yet.");
    let (_, alice) = as_user("http-api/2-collin-what-is-my-name.json", Some("alice"))
        .call_json(&app)
        .await;
    assert_eq!(alice["reply"], "Your name is Collin.");
    assert!(env.item("alice/user-id-123").await.is_some());
    assert!(env.item("bob/user-id-123").await.is_some());
    assert!(env.item("user-id-123").await.is_none());

    // Reads and deletes are scoped too.
    let (status, body) = as_user("http-api/get-session.json", Some("bob"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["runs"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let reply = as_user("http-api/delete-session.json", Some("bob"))
        .call(&app)
        .await;
    assert_eq!(reply.status, 204);
    assert!(
        env.item("alice/user-id-123").await.is_some(),
        "Alice's session survives Bob's delete"
    );

    // No verified identity, no access.
    let (status, body) = as_user("http-api/1-collin-hello.json", None)
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

/// The template, with CloudFormation's short tags (`!Ref`, `!If`...) read as plain values.
fn template() -> Yaml {
    let text = std::fs::read_to_string(repo().join("template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(items) => items.iter().flat_map(strings).collect(),
        Yaml::Mapping(map) => map.values().flat_map(strings).collect(),
        Yaml::Tagged(t) => strings(&t.value),
        _ => vec![],
    }
}

/// Every AWS API call in the source, as the IAM action it needs.
fn actions_in_source() -> BTreeSet<String> {
    let calls: HashMap<&str, &[&str]> = HashMap::from([
        (".get_item()", &["dynamodb:GetItem"][..]),
        (".update_item()", &["dynamodb:UpdateItem"]),
        (".put_item()", &["dynamodb:PutItem"]),
        (".delete_item()", &["dynamodb:DeleteItem"]),
        (
            ".transact_write_items()",
            &["dynamodb:PutItem", "dynamodb:DeleteItem"],
        ),
        (".query()", &["dynamodb:Query"]),
        (".scan()", &["dynamodb:Scan"]),
        (".batch_get_item()", &["dynamodb:BatchGetItem"]),
        (".batch_write_item()", &["dynamodb:BatchWriteItem"]),
        (".get_secret_value()", &["secretsmanager:GetSecretValue"]),
        (".converse()", &["bedrock:InvokeModel"]),
        (
            ".converse_stream()",
            &["bedrock:InvokeModelWithResponseStream"],
        ),
    ]);
    let mut actions = BTreeSet::new();
    // Every source file, in every module folder.
    let mut folders = vec![repo().join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let code = std::fs::read_to_string(&path).unwrap();
                for (call, needs) in &calls {
                    if code.contains(call) {
                        actions.extend(needs.iter().map(|a| a.to_string()));
                    }
                }
            }
        }
    }
    actions
}

#[test]
fn compute_types_are_a_choice() {
    let t = template();
    let resources = &t["Resources"];
    let allowed = strings(&t["Parameters"]["ComputeType"]["AllowedValues"]);
    assert_eq!(allowed, ["OnDemand", "ManagedInstances"]);
    assert_eq!(t["Parameters"]["ComputeType"]["Default"], "OnDemand");
    assert_eq!(resources["ChatFunction"]["Condition"], "IsOnDemand");
    assert_eq!(resources["ChatFunctionManaged"]["Condition"], "IsManaged");
    assert_eq!(resources["ChatCapacityProvider"]["Condition"], "IsManaged");
    let managed = &resources["ChatFunctionManaged"]["Properties"]["CapacityProviderConfig"];
    assert_eq!(
        strings(&managed["PerExecutionEnvironmentMaxConcurrency"]),
        ["PerEnvironmentMaxConcurrency"]
    );
    let provider = &resources["ChatCapacityProvider"]["Properties"];
    assert_eq!(
        strings(&provider["InstanceRequirements"]["Architectures"]),
        ["arm64"]
    );
    // Every entry point calls whichever function the stack has, through its alias.
    for (name, field) in [
        ("ChatIntegration", "IntegrationUri"),
        ("ChatInvokePermission", "FunctionName"),
        ("StreamInvokePermission", "FunctionName"),
    ] {
        let target = strings(&resources[name]["Properties"][field]);
        assert!(
            target.contains(&"ChatFunctionManagedAliaslive".to_owned())
                && target.contains(&"ChatFunctionAliaslive".to_owned()),
            "{name}: {target:?}"
        );
    }
}

#[test]
fn the_template_matches_the_code() {
    let t = template();
    let resources = &t["Resources"];

    // The table key is the store's: PartitionKeyName (default `id`, a string), and the owner
    // index the tests' tables have (tests/it/support/table.rs).
    let table = &resources["SessionsTable"]["Properties"];
    let reference = |v: &Yaml| match v {
        Yaml::Tagged(tagged) => tagged.value.as_str().map(str::to_owned),
        _ => None,
    };
    assert_eq!(
        reference(&table["KeySchema"][0]["AttributeName"]).as_deref(),
        Some("PartitionKeyName")
    );
    assert_eq!(t["Parameters"]["PartitionKeyName"]["Default"], "id");
    assert_eq!(t["Parameters"]["ValueAttributeName"]["Default"], "value");
    assert_eq!(table["KeySchema"][0]["KeyType"], "HASH");
    assert_eq!(table["AttributeDefinitions"][0]["AttributeType"], "S");
    let index = &table["GlobalSecondaryIndexes"][0];
    let expected = crate::support::owner_index();
    assert_eq!(index["IndexName"], expected.index_name());
    for (i, key) in expected.key_schema().iter().enumerate() {
        assert_eq!(index["KeySchema"][i]["AttributeName"], key.attribute_name());
    }
    let projected: Vec<String> = strings(&index["Projection"]["NonKeyAttributes"]);
    assert_eq!(
        projected,
        expected.projection().unwrap().non_key_attributes().to_vec()
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        "expires_at"
    );
    assert_eq!(resources["SessionsTable"]["DeletionPolicy"], "Retain");

    // Every variable the code reads is set by the template or deliberately left to its default.
    // Both compute types' functions take their settings from Globals.
    let function = &t["Globals"]["Function"];
    let set: BTreeSet<String> = function["Environment"]["Variables"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let read = std::sync::Mutex::new(BTreeSet::new());
    session_chat::config::Config::from_lookup(|key| {
        read.lock().unwrap().insert(key.to_owned());
        match key {
            "TABLE_NAME" => Some("t".into()),
            "OPENAI_API_KEY" => Some("k".into()),
            _ => None,
        }
    })
    .unwrap();
    // OPENAI_API_KEY is for local use: deployed, the key comes from Secrets Manager.
    // INVOKE_MODE stays BUFFERED: the streaming API's stage variable marks its invocations.
    // STORAGE_LAYOUT is read only to refuse a setting of earlier releases other than `log`.
    let local_only = BTreeSet::from([
        "OPENAI_API_KEY".to_owned(),
        "INVOKE_MODE".to_owned(),
        "STORAGE_LAYOUT".to_owned(),
    ]);
    let read = read.into_inner().unwrap();
    let missing: Vec<_> = read
        .difference(&set)
        .filter(|v| !local_only.contains(*v))
        .collect();
    assert!(
        missing.is_empty(),
        "read by the code, not set by the template: {missing:?}"
    );
    assert!(
        !set.contains("OPENAI_API_KEY"),
        "the key never sits in plain text in the configuration"
    );
    let unknown: Vec<_> = set.difference(&read).filter(|v| *v != "RUST_LOG").collect();
    assert!(
        unknown.is_empty(),
        "set by the template, never read: {unknown:?}"
    );

    // The IAM policies cover every call the code makes, and name resources, never '*'.
    // One role for both functions, and theirs is it.
    for name in ["ChatFunction", "ChatFunctionManaged"] {
        let role = strings(&resources[name]["Properties"]["Role"]);
        assert_eq!(
            role.first().map(String::as_str),
            Some("ChatRole.Arn"),
            "{name}"
        );
    }
    let policies = &resources["ChatRole"]["Properties"]["Policies"];
    let granted: BTreeSet<String> = strings(policies)
        .into_iter()
        .filter(|s| s.contains(':') && !s.starts_with("arn:") && !s.contains('$'))
        .collect();
    for action in actions_in_source() {
        assert!(
            granted.contains(&action),
            "{action} is called but not granted"
        );
    }
    assert!(
        !strings(policies).iter().any(|s| s == "*"),
        "no Resource: '*'"
    );

    // The routes the adapter serves.
    let routes: BTreeSet<String> = resources
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::ApiGatewayV2::Route")
        .map(|r| r["Properties"]["RouteKey"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(
            [
                "GET /",
                "POST /chat",
                "GET /sessions",
                "DELETE /sessions",
                "GET /sessions/{session_id}",
                "PATCH /sessions/{session_id}",
                "DELETE /sessions/{session_id}",
                "POST /sessions/{session_id}/select",
                "DELETE /sessions/{session_id}/runs/{run_id}",
                "PUT /sessions/{session_id}/runs/{run_id}/feedback",
                "GET /sessions/{session_id}/runs/{run_id}/stream",
                "ANY /v1/{proxy+}"
            ]
            .map(String::from)
        )
    );
    // Every route but the page is authorized as AuthMode says; the page is public (it holds no
    // data, and a browser cannot sign a page load).
    for route in resources.as_mapping().unwrap().values() {
        if route["Type"] != "AWS::ApiGatewayV2::Route" {
            continue;
        }
        let auth = &route["Properties"]["AuthorizationType"];
        if route["Properties"]["RouteKey"] == "GET /" {
            assert_eq!(auth.as_str(), Some("NONE"));
        } else {
            assert!(auth.as_str().is_none(), "{auth:?} follows AuthMode");
        }
    }
    // Authenticated by default.
    assert_eq!(t["Parameters"]["AuthMode"]["Default"], "AWS_IAM");
}

/// The `!If [IsJwt, a, !If [IsIam, b, c]]` choice as (JWT, AWS_IAM, NONE).
fn per_auth_mode(v: &Yaml) -> (String, String, String) {
    let Yaml::Tagged(t) = v else {
        panic!("not an !If: {v:?}")
    };
    assert_eq!(t.tag, "!If");
    assert_eq!(t.value[0], "IsJwt");
    let Yaml::Tagged(inner) = &t.value[2] else {
        panic!("not an !If: {v:?}")
    };
    assert_eq!(inner.value[0], "IsIam");
    let s = |v: &Yaml| v.as_str().unwrap().to_owned();
    (s(&t.value[1]), s(&inner.value[1]), s(&inner.value[2]))
}

#[test]
fn the_template_streams_post_chat_in_every_auth_mode() {
    let t = template();
    let resources = &t["Resources"];
    let of_type = |kind: &str| -> Vec<&Yaml> {
        resources
            .as_mapping()
            .unwrap()
            .values()
            .filter(|r| r["Type"] == kind)
            .collect()
    };

    // Two REST routes, POST /chat and ANY /v1/{proxy+} (the Responses API), each integrated
    // by streaming invocation of the chat function.
    let methods = of_type("AWS::ApiGateway::Method");
    assert_eq!(methods.len(), 2, "the streaming API has two routes");
    let method = &resources["StreamChatMethod"]["Properties"];
    assert_eq!(method["HttpMethod"], "POST");
    let resource = &resources["StreamChatResource"]["Properties"];
    assert_eq!(resource["PathPart"], "chat");
    let v1 = &resources["StreamV1Method"]["Properties"];
    assert_eq!(v1["HttpMethod"], "ANY");
    assert_eq!(
        resources["StreamV1Resource"]["Properties"]["PathPart"],
        "v1"
    );
    assert_eq!(
        resources["StreamV1ProxyResource"]["Properties"]["PathPart"],
        "{proxy+}"
    );
    assert_eq!(
        v1["Integration"], method["Integration"],
        "the same streaming integration"
    );
    assert_eq!(v1["AuthorizationType"], method["AuthorizationType"]);
    let integration = &method["Integration"];
    assert_eq!(integration["Type"], "AWS_PROXY");
    assert_eq!(integration["ResponseTransferMode"], "STREAM");
    let uri = strings(&integration["Uri"]).concat();
    assert!(
        uri.contains(
            ":lambda:path/2021-11-15/functions/${Function}/response-streaming-invocations"
        ),
        "{uri}"
    );
    // Streaming answers outlast the function's own timeout (30 s), so the function ends them.
    let timeout = integration["TimeoutInMillis"].as_u64().unwrap();
    assert!(timeout > 30_000, "{timeout}");
    assert_eq!(t["Globals"]["Function"]["Timeout"], 30);

    // Every auth mode has its authorizer on both APIs.
    let (jwt, iam, none) = per_auth_mode(&method["AuthorizationType"]);
    assert_eq!(
        (jwt.as_str(), iam.as_str(), none.as_str()),
        ("COGNITO_USER_POOLS", "AWS_IAM", "NONE")
    );
    let (jwt, iam, none) =
        per_auth_mode(&resources["ChatRoute"]["Properties"]["AuthorizationType"]);
    assert_eq!(
        (jwt.as_str(), iam.as_str(), none.as_str()),
        ("JWT", "AWS_IAM", "NONE")
    );
    let authorizer = &resources["StreamCognitoAuthorizer"];
    assert_eq!(authorizer["Properties"]["Type"], "COGNITO_USER_POOLS");
    assert_eq!(authorizer["Condition"], "IsStreamingJwt");
    assert!(strings(&method["AuthorizerId"]).contains(&"StreamCognitoAuthorizer".to_owned()));
    // The function checks the audience a Cognito authorizer does not.
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(strings(&env["JWT_AUDIENCE"]), ["JwtAudience"]);

    // Its stage marks the events for the streaming format, and is throttled like the HTTP API.
    let stage = &resources["StreamStage"]["Properties"];
    assert_eq!(
        stage["Variables"][session_chat::lambda::INVOKE_MODE_STAGE_VARIABLE],
        session_chat::lambda::RESPONSE_STREAM
    );
    let settings = &stage["MethodSettings"][0];
    assert_eq!(
        (&settings["ResourcePath"], &settings["HttpMethod"]),
        (&Yaml::from("/*"), &Yaml::from("*"))
    );
    assert_eq!(
        strings(&settings["ThrottlingRateLimit"]),
        ["ThrottlingRateLimit"]
    );
    assert_eq!(
        strings(&settings["ThrottlingBurstLimit"]),
        ["ThrottlingBurstLimit"]
    );

    // API Gateway may invoke the function from this API only.
    let permission = &resources["StreamInvokePermission"]["Properties"];
    assert_eq!(permission["Principal"], "apigateway.amazonaws.com");
    assert!(strings(&permission["SourceArn"])
        .concat()
        .contains("${StreamApi}/*"));
    assert!(t["Outputs"]["StreamChatUrl"]["Value"] != Yaml::Null);
}

/// `!Ref name`'s name.
fn ref_name(v: &Yaml) -> Option<&str> {
    match v {
        Yaml::Tagged(t) if t.tag == "!Ref" => t.value.as_str(),
        _ => None,
    }
}

/// Where a metric an alarm or the dashboard reads lives.
#[derive(Debug, PartialEq)]
enum Namespace {
    /// The function's own, `MetricsNamespace`.
    Ours,
    /// A service's, `AWS/...`.
    Aws(String),
}

impl Namespace {
    /// An alarm's `Namespace`: `!Ref MetricsNamespace` or an `AWS/` one, never a name of ours
    /// written out (it would miss a stack with another namespace).
    fn of_alarm(v: &Yaml, what: &str) -> Namespace {
        match (ref_name(v), v.as_str()) {
            (Some("MetricsNamespace"), _) => Namespace::Ours,
            (_, Some(aws)) if aws.starts_with("AWS/") => Namespace::Aws(aws.to_owned()),
            _ => panic!("{what}: namespace {v:?} is neither !Ref MetricsNamespace nor AWS/"),
        }
    }

    /// A dashboard's namespace, in its `!Sub` text.
    fn of_dashboard(name: &str, what: &str) -> Namespace {
        match name {
            "${MetricsNamespace}" => Namespace::Ours,
            aws if aws.starts_with("AWS/") => Namespace::Aws(aws.to_owned()),
            _ => panic!("{what}: namespace {name:?} is neither ${{MetricsNamespace}} nor AWS/"),
        }
    }
}

/// A metric of ours that an alarm or the dashboard reads is one the code emits, with no
/// dimension but `ErrorCode` on `Errors`.
fn assert_emitted(name: &str, dimensions: &[String], what: &str) {
    use session_chat::metrics::{ERRORS, ERROR_CODE, METRICS};
    assert!(
        METRICS.iter().any(|m| m.name == name),
        "{what} reads {name}, which the code never emits"
    );
    for dimension in dimensions {
        assert!(
            name == ERRORS && dimension == ERROR_CODE,
            "{what}: {name} is never emitted by {dimension}"
        );
    }
}

/// An alarm's metrics as (namespace, name, dimension names, dimension values, statistic): its
/// own, or each `MetricStat` of its metric math.
fn alarm_metrics(name: &str, alarm: &Yaml) -> Vec<(Namespace, String, Vec<String>, Yaml, String)> {
    let p = &alarm["Properties"];
    let read = |metric: &Yaml, stat: &Yaml| {
        let dimensions = metric["Dimensions"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        (
            Namespace::of_alarm(&metric["Namespace"], name),
            metric["MetricName"].as_str().unwrap().to_owned(),
            dimensions
                .iter()
                .map(|d| d["Name"].as_str().unwrap().to_owned())
                .collect(),
            Yaml::Sequence(dimensions.iter().map(|d| d["Value"].clone()).collect()),
            stat.as_str().unwrap().to_owned(),
        )
    };
    match p["Metrics"].as_sequence() {
        Some(math) => math
            .iter()
            .filter(|m| m.get("MetricStat").is_some())
            .map(|m| read(&m["MetricStat"]["Metric"], &m["MetricStat"]["Stat"]))
            .collect(),
        None => {
            let stat = match p.get("ExtendedStatistic") {
                Some(extended) => extended,
                None => &p["Statistic"],
            };
            vec![read(p, stat)]
        }
    }
}

#[test]
fn every_alarm_reads_a_metric_the_code_emits() {
    let t = template();
    let resources = t["Resources"].as_mapping().unwrap();
    let alarms: Vec<(&str, &Yaml)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(name, r)| (name.as_str().unwrap(), r))
        .collect();

    let mut read = Vec::new();
    let mut throttled_functions = BTreeSet::new();
    for (name, alarm) in &alarms {
        let p = &alarm["Properties"];
        for (namespace, metric, dimensions, values, stat) in alarm_metrics(name, alarm) {
            if namespace == Namespace::Ours {
                assert_emitted(&metric, &dimensions, name);
            }
            if metric == "Throttles" {
                // The function the stack has: a plain !Ref only under that function's condition.
                let functions = strings(&values);
                if let [only] = &values.as_sequence().unwrap()[..] {
                    if let Some(function) = ref_name(only) {
                        assert_eq!(
                            alarm["Condition"], resources[function]["Condition"],
                            "{name}"
                        );
                    }
                }
                throttled_functions.extend(functions);
            }
            read.push((namespace, metric, stat));
        }
        // Its threshold is a parameter, missing data is no alarm, and it notifies the topic
        // only when AlarmEmail gives one.
        let threshold =
            ref_name(&p["Threshold"]).unwrap_or_else(|| panic!("{name}: Threshold is not a !Ref"));
        assert!(
            t["Parameters"][threshold].is_mapping(),
            "{name}: {threshold} is not a parameter"
        );
        assert_eq!(p["TreatMissingData"], "notBreaching", "{name}");
        assert!(
            p["AlarmDescription"]
                .as_str()
                .unwrap()
                .contains("docs/operations.md#"),
            "{name}"
        );
        for actions in ["AlarmActions", "OKActions"] {
            let Yaml::Tagged(choice) = &p[actions] else {
                panic!("{name}: {actions} is not an !If")
            };
            assert_eq!(choice.tag, "!If", "{name}: {actions}");
            assert_eq!(choice.value[0], "HasAlarmEmail", "{name}: {actions}");
            assert_eq!(
                strings(&choice.value[1]),
                ["AlarmTopic"],
                "{name}: {actions}"
            );
            assert_eq!(
                ref_name(&choice.value[2]),
                Some("AWS::NoValue"),
                "{name}: {actions}"
            );
        }
        assert!(p.get("InsufficientDataActions").is_none(), "{name}");
    }

    // The five alarms: 5xx rate, model errors, throttles of whichever function the stack has,
    // store errors, p99 latency.
    let lambda = || Namespace::Aws("AWS/Lambda".to_owned());
    for (namespace, metric, stat) in [
        (Namespace::Ours, "ServerErrors", "Average"),
        (Namespace::Ours, "ModelErrors", "Sum"),
        (lambda(), "Throttles", "Sum"),
        (Namespace::Ours, "StoreErrors", "Sum"),
        (Namespace::Ours, "Latency", "p99"),
    ] {
        assert!(
            read.iter()
                .any(|(n, m, s)| *n == namespace && m == metric && s == stat),
            "no alarm on {metric} {stat}: {read:?}"
        );
    }
    for function in ["ChatFunction", "ChatFunctionManaged"] {
        assert!(
            throttled_functions.contains(function),
            "{function}'s throttles: {throttled_functions:?}"
        );
    }

    // The topic exists only with an address, which it mails.
    assert_eq!(t["Parameters"]["AlarmEmail"]["Default"], "");
    assert_eq!(
        strings(&t["Conditions"]["HasAlarmEmail"]),
        ["AlarmEmail", ""]
    );
    assert_eq!(resources["AlarmTopic"]["Type"], "AWS::SNS::Topic");
    assert_eq!(resources["AlarmTopic"]["Condition"], "HasAlarmEmail");
    let subscriptions: Vec<&Yaml> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::SNS::Subscription")
        .collect();
    assert_eq!(subscriptions.len(), 1);
    let subscription = subscriptions[0];
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["Protocol"], "email");
    assert_eq!(
        ref_name(&subscription["Properties"]["Endpoint"]),
        Some("AlarmEmail")
    );
    assert_eq!(
        ref_name(&subscription["Properties"]["TopicArn"]),
        Some("AlarmTopic")
    );
}

/// A dashboard `SEARCH('{namespace,dimension...} MetricName="name"', ...)` as (namespace,
/// dimensions, metric name). The schema ends at its first `}` outside double quotes (a quoted
/// `"${MetricsNamespace}"` holds one).
fn search_terms(expression: &str) -> (String, Vec<String>, Option<String>) {
    let start = expression.find('{').unwrap() + 1;
    let mut quoted = false;
    let end = start
        + expression[start..]
            .find(|c| {
                quoted ^= c == '"';
                c == '}' && !quoted
            })
            .unwrap();
    let mut parts = expression[start..end]
        .split(',')
        .map(|p| p.trim().trim_matches('"').to_owned());
    let namespace = parts.next().unwrap();
    let name = expression[end..]
        .split_once("MetricName=\"")
        .map(|(_, rest)| rest.split('"').next().unwrap().to_owned());
    (namespace, parts.collect(), name)
}

#[test]
fn the_dashboard_graphs_every_metric_the_code_emits() {
    let t = template();
    let dashboards: Vec<&Yaml> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Dashboard")
        .collect();
    assert_eq!(dashboards.len(), 1);
    let Yaml::Tagged(sub) = &dashboards[0]["Properties"]["DashboardBody"] else {
        panic!("DashboardBody is not a !Sub")
    };
    assert_eq!(sub.tag, "!Sub");
    let text = match &sub.value {
        Yaml::Sequence(parts) => parts[0].as_str().unwrap(),
        other => other.as_str().unwrap(),
    };
    let body: serde_json::Value = serde_json::from_str(text).expect("the body is JSON");

    let mut graphed = BTreeSet::new();
    for widget in body["widgets"].as_array().unwrap() {
        if widget["type"] != "metric" {
            continue;
        }
        let what = format!("the dashboard's {}", widget["properties"]["title"]);
        let (mut namespace, mut name) = (String::new(), String::new());
        for row in widget["properties"]["metrics"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            if let Some(expression) = row[0].get("expression") {
                let expression = expression.as_str().unwrap();
                if !expression.contains("SEARCH(") {
                    continue; // math over the widget's other rows
                }
                let (namespace, dimensions, name) = search_terms(expression);
                if Namespace::of_dashboard(&namespace, &what) == Namespace::Ours {
                    let name = name.unwrap_or_else(|| panic!("{what}: a search names no metric"));
                    assert_emitted(&name, &dimensions, &what);
                    graphed.insert(name);
                }
                continue;
            }
            // [namespace, name, dimension, value, ..., {options}], "." repeating the row above.
            let field = |i: usize, above: &str| match row[i].as_str().unwrap() {
                "." => above.to_owned(),
                s => s.to_owned(),
            };
            namespace = field(0, &namespace);
            name = field(1, &name);
            let dimensions: Vec<String> = row[2..]
                .iter()
                .take_while(|v| v.is_string())
                .step_by(2)
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            if Namespace::of_dashboard(&namespace, &what) == Namespace::Ours {
                assert_emitted(&name, &dimensions, &what);
                graphed.insert(name.clone());
            }
        }
    }
    let emitted: BTreeSet<String> = session_chat::metrics::METRICS
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    assert_eq!(
        graphed, emitted,
        "the dashboard graphs every metric, and only those"
    );
    assert!(t["Outputs"]["DashboardUrl"]["Value"] != Yaml::Null);
}

#[test]
fn quotas_and_the_namespace_come_from_parameters() {
    let t = template();
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        ref_name(&env["METRICS_NAMESPACE"]),
        Some("MetricsNamespace")
    );
    assert_eq!(
        t["Parameters"]["MetricsNamespace"]["Default"],
        session_chat::metrics::DEFAULT_NAMESPACE
    );
    // 0 turns a quota off: the variable is then empty, which the code reads as unset.
    let mut defaults = Vec::new();
    for (variable, parameter, condition) in [
        (
            "QUOTA_TURNS_PER_MINUTE",
            "QuotaTurnsPerMinute",
            "HasTurnQuota",
        ),
        ("QUOTA_TOKENS_PER_DAY", "QuotaTokensPerDay", "HasTokenQuota"),
    ] {
        let Yaml::Tagged(choice) = &env[variable] else {
            panic!("{variable} is not an !If")
        };
        assert_eq!(choice.tag, "!If");
        assert_eq!(choice.value[0], condition);
        assert_eq!(ref_name(&choice.value[1]), Some(parameter));
        assert_eq!(choice.value[2], "");
        assert_eq!(strings(&t["Conditions"][condition]), [parameter, "0"]);
        let default = t["Parameters"][parameter]["Default"]
            .as_str()
            .unwrap()
            .to_owned();
        defaults.push((variable, default));
    }
    let config = |values: &[(&str, String)]| {
        session_chat::config::Config::from_lookup(|key| match key {
            "TABLE_NAME" => Some("t".into()),
            "OPENAI_API_KEY" => Some("k".into()),
            _ => values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone()),
        })
        .unwrap()
    };
    let on = config(&defaults);
    assert_eq!(
        (on.quota_turns_per_minute, on.quota_tokens_per_day),
        (Some(20), Some(1_000_000))
    );
    let off = config(
        &defaults
            .iter()
            .map(|(k, _)| (*k, String::new()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        (off.quota_turns_per_minute, off.quota_tokens_per_day),
        (None, None)
    );
}
