//! Configuration, read from the environment once per cold start.

use std::fmt;
use std::time::Duration;

/// OpenAI's API; any OpenAI-compatible server can stand in via `OPENAI_BASE_URL`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL_ID: &str = "gpt-4.1-mini";
pub const DEFAULT_BEDROCK_MODEL_ID: &str = "amazon.nova-lite-v1:0";
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const DEFAULT_MODEL_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_HISTORY_TOKEN_BUDGET: u64 = 8000;

/// A value that must never reach a log or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which model service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Any OpenAI-compatible chat-completions server.
    OpenAi,
    /// Amazon Bedrock's Converse API, with IAM auth.
    Bedrock,
}

/// How callers are authenticated in front of the function (`AUTH_MODE`, set by the template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// API Gateway checks SigV4 signatures; callers are trusted backends.
    AwsIam,
    /// API Gateway checks a JWT; each caller's sessions are scoped by the token's `sub`.
    Jwt,
    /// No authentication.
    None,
}

/// How the function hands back its answers unless the event says otherwise (`INVOKE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokeMode {
    /// Whole responses, for API Gateway's buffered integrations and `Invoke` (the default).
    Buffered,
    /// Lambda's streaming format for every response (metadata, then the body as it is
    /// written), for `InvokeWithResponseStream`: function URLs in `RESPONSE_STREAM` mode,
    /// `cargo lambda watch`, the bench's Runtime API.
    ResponseStream,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_PROVIDER`: `openai` (default) or `bedrock`.
    pub provider: Provider,
    /// `OPENAI_API_KEY_SECRET_ID`: a Secrets Manager secret holding the OpenAI key.
    pub openai_api_key_secret_id: Option<String>,
    /// `AUTH_MODE`: `AWS_IAM` (default), `JWT` or `NONE`.
    pub auth_mode: AuthMode,
    /// `TABLE_NAME`: the DynamoDB table holding sessions (required).
    pub table_name: String,
    /// `OPENAI_BASE_URL`, without a trailing slash.
    pub openai_base_url: String,
    /// `OPENAI_API_KEY`: for local use; deployed functions use `OPENAI_API_KEY_SECRET_ID`.
    pub openai_api_key: Option<Secret>,
    /// `MODEL_ID`.
    pub model_id: String,
    /// `SYSTEM_PROMPT`: sent first in every prompt when set.
    pub system_prompt: Option<String>,
    /// `MAX_RUNS`: keep at most this many runs per session.
    pub max_runs: Option<u64>,
    /// `MAX_MESSAGE_BYTES`: longer messages are refused with 413.
    pub max_message_bytes: usize,
    /// `MODEL_TIMEOUT_SECS`: the longest one model call may take.
    pub model_timeout: Duration,
    /// `MAX_ITEM_BYTES`: past this, a session's oldest runs move to archive items.
    pub max_item_bytes: usize,
    /// `SESSION_TTL_DAYS`: sessions expire this many days after their last message.
    pub session_ttl_days: Option<u64>,
    /// `HISTORY_TOKEN_BUDGET`: the most history (estimated tokens) sent with a prompt.
    pub history_token_budget: u64,
    /// `SUMMARIZE`: fold runs that leave the prompt window into a running summary.
    pub summarize: bool,
    /// `MEMORY_FORMAT`: `seed` (default) or `griptape`, for new sessions.
    pub memory_format: crate::memory::Format,
    /// `PARTITION_KEY`, `VALUE_ATTRIBUTE`, `SORT_KEY` / `SORT_KEY_VALUE` / `SORT_KEY_TYPE`: the
    /// table's key schema, as griptape's driver names it.
    pub key_schema: crate::store::KeySchema,
    /// `OWNER_INDEX`: the global secondary index that lists a user's sessions; unset, listing
    /// is off.
    pub owner_index: Option<String>,
    /// `JWT_AUDIENCE`: in JWT mode, the audience (app client id) a REST API Cognito
    /// authorizer's claims must carry (`aud` of an ID token, `client_id` of an access token).
    pub jwt_audience: Option<String>,
    /// `INVOKE_MODE`: `BUFFERED` (default) or `RESPONSE_STREAM`.
    pub invoke_mode: InvokeMode,
}

/// A configuration value that cannot be used; the text names the variable and what it expects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{var} must be {expected}, got {value:?}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `get`; empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |key: &str| get(key).filter(|v| !v.trim().is_empty());

        let table_name = get("TABLE_NAME").ok_or(ConfigError::Missing("TABLE_NAME"))?;
        let openai_base_url = match get("OPENAI_BASE_URL") {
            Some(url) => {
                let url = url.trim().trim_end_matches('/').to_owned();
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if rest.is_none_or(|host| host.is_empty()) {
                    return Err(ConfigError::Invalid {
                        var: "OPENAI_BASE_URL",
                        value: url,
                        expected: "an http:// or https:// URL",
                    });
                }
                url
            }
            None => DEFAULT_OPENAI_BASE_URL.to_owned(),
        };
        let provider = match get("MODEL_PROVIDER") {
            None => Provider::OpenAi,
            Some(v) if v.trim().eq_ignore_ascii_case("openai") => Provider::OpenAi,
            Some(v) if v.trim().eq_ignore_ascii_case("bedrock") => Provider::Bedrock,
            Some(value) => {
                return Err(ConfigError::Invalid {
                    var: "MODEL_PROVIDER",
                    value,
                    expected: "openai or bedrock",
                })
            }
        };
        let auth_mode = match get("AUTH_MODE") {
            None => AuthMode::AwsIam,
            Some(v) if v.trim().eq_ignore_ascii_case("AWS_IAM") => AuthMode::AwsIam,
            Some(v) if v.trim().eq_ignore_ascii_case("JWT") => AuthMode::Jwt,
            Some(v) if v.trim().eq_ignore_ascii_case("NONE") => AuthMode::None,
            Some(value) => {
                return Err(ConfigError::Invalid {
                    var: "AUTH_MODE",
                    value,
                    expected: "AWS_IAM, JWT or NONE",
                })
            }
        };
        let openai_api_key = get("OPENAI_API_KEY").map(Secret::new);
        let openai_api_key_secret_id = get("OPENAI_API_KEY_SECRET_ID");
        if provider == Provider::OpenAi
            && openai_api_key.is_none()
            && openai_api_key_secret_id.is_none()
            && openai_base_url == DEFAULT_OPENAI_BASE_URL
        {
            return Err(ConfigError::Missing(
                "OPENAI_API_KEY_SECRET_ID (or OPENAI_API_KEY)",
            ));
        }
        let positive = |var: &'static str| -> Result<Option<u64>, ConfigError> {
            get(var)
                .map(|value| match value.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        var,
                        value,
                        expected: "a positive whole number",
                    }),
                })
                .transpose()
        };
        let max_message_bytes = match positive("MAX_MESSAGE_BYTES")? {
            Some(n) => usize::try_from(n).map_err(|_| ConfigError::Invalid {
                var: "MAX_MESSAGE_BYTES",
                value: n.to_string(),
                expected: "a byte count this machine can hold",
            })?,
            None => DEFAULT_MAX_MESSAGE_BYTES,
        };
        let model_timeout = match get("MODEL_TIMEOUT_SECS") {
            Some(value) => match value.trim().parse::<f64>() {
                Ok(secs) if secs > 0.0 && secs <= 900.0 => Duration::from_secs_f64(secs),
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "MODEL_TIMEOUT_SECS",
                        value,
                        expected: "a number of seconds above 0 and at most 900",
                    })
                }
            },
            None => DEFAULT_MODEL_TIMEOUT,
        };

        let max_item_bytes = match positive("MAX_ITEM_BYTES")? {
            Some(n) if (4096..=350_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid {
                    var: "MAX_ITEM_BYTES",
                    value: n.to_string(),
                    expected: "between 4096 and 350000 (DynamoDB items stop at 400 KB)",
                })
            }
            None => crate::store::DEFAULT_MAX_ITEM_BYTES,
        };

        let session_ttl_days = match positive("SESSION_TTL_DAYS")? {
            Some(days) if days > 36_500 => {
                return Err(ConfigError::Invalid {
                    var: "SESSION_TTL_DAYS",
                    value: days.to_string(),
                    expected: "a number of days up to 36500",
                })
            }
            days => days,
        };

        let is = |v: &str, words: &[&str]| words.iter().any(|w| v.trim().eq_ignore_ascii_case(w));
        let summarize = match get("SUMMARIZE") {
            None => false,
            Some(v) if is(&v, &["true", "1", "yes"]) => true,
            Some(v) if is(&v, &["false", "0", "no"]) => false,
            Some(value) => {
                return Err(ConfigError::Invalid {
                    var: "SUMMARIZE",
                    value,
                    expected: "true or false",
                })
            }
        };

        let memory_format = match get("MEMORY_FORMAT") {
            None => crate::memory::Format::Seed,
            Some(v) if v.trim().eq_ignore_ascii_case("seed") => crate::memory::Format::Seed,
            Some(v) if v.trim().eq_ignore_ascii_case("griptape") => crate::memory::Format::Griptape,
            Some(value) => {
                return Err(ConfigError::Invalid {
                    var: "MEMORY_FORMAT",
                    value,
                    expected: "seed or griptape",
                })
            }
        };
        let name = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = get(var).unwrap_or_else(|| default.to_owned());
            // DynamoDB attribute names are 1-255 bytes; ours must stay ours.
            if value.is_empty() || value.len() > 255 || crate::store::attr::is_reserved(&value) {
                return Err(ConfigError::Invalid {
                    var,
                    value,
                    expected:
                        "an attribute name of 1-255 bytes that session-chat does not use itself",
                });
            }
            Ok(value)
        };
        let partition_key = name("PARTITION_KEY", "id")?;
        let value_attribute = name("VALUE_ATTRIBUTE", "value")?;
        let sort_key_type = get("SORT_KEY_TYPE");
        let sort_key = match (get("SORT_KEY"), get("SORT_KEY_VALUE")) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    var: "SORT_KEY_VALUE",
                    value: get("SORT_KEY_VALUE").unwrap_or_default(),
                    expected: "set together with SORT_KEY",
                })
            }
            (Some(_), Some(value)) => {
                let key = name("SORT_KEY", "")?;
                let typed = match sort_key_type.as_deref().map(str::trim) {
                    None | Some("S") | Some("s") => crate::store::SortValue::S(value),
                    Some("N") | Some("n") => {
                        if value.trim().parse::<f64>().is_err() {
                            return Err(ConfigError::Invalid {
                                var: "SORT_KEY_VALUE",
                                value,
                                expected: "a number, with SORT_KEY_TYPE=N",
                            });
                        }
                        crate::store::SortValue::N(value.trim().to_owned())
                    }
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            var: "SORT_KEY_TYPE",
                            value: other.to_owned(),
                            expected: "S or N",
                        })
                    }
                };
                Some((key, typed))
            }
        };
        let key_names: Vec<&str> = std::iter::once(partition_key.as_str())
            .chain(std::iter::once(value_attribute.as_str()))
            .chain(sort_key.as_ref().map(|(k, _)| k.as_str()))
            .collect();
        if key_names
            .iter()
            .enumerate()
            .any(|(i, a)| key_names[..i].contains(a))
        {
            return Err(ConfigError::Invalid {
                var: "VALUE_ATTRIBUTE",
                value: value_attribute,
                expected: "names different from PARTITION_KEY and SORT_KEY",
            });
        }
        let key_schema = crate::store::KeySchema {
            partition_key,
            value_attribute,
            sort_key,
        };
        let invoke_mode = match get("INVOKE_MODE") {
            None => InvokeMode::Buffered,
            Some(v) if v.trim().eq_ignore_ascii_case("BUFFERED") => InvokeMode::Buffered,
            Some(v) if v.trim().eq_ignore_ascii_case("RESPONSE_STREAM") => {
                InvokeMode::ResponseStream
            }
            Some(value) => {
                return Err(ConfigError::Invalid {
                    var: "INVOKE_MODE",
                    value,
                    expected: "BUFFERED or RESPONSE_STREAM",
                })
            }
        };
        let default_model = match provider {
            Provider::OpenAi => DEFAULT_MODEL_ID,
            Provider::Bedrock => DEFAULT_BEDROCK_MODEL_ID,
        };

        Ok(Config {
            provider,
            openai_api_key_secret_id,
            auth_mode,
            table_name,
            summarize,
            memory_format,
            max_item_bytes,
            session_ttl_days,
            history_token_budget: positive("HISTORY_TOKEN_BUDGET")?
                .unwrap_or(DEFAULT_HISTORY_TOKEN_BUDGET),
            openai_base_url,
            openai_api_key,
            model_id: get("MODEL_ID").unwrap_or_else(|| default_model.to_owned()),
            system_prompt: get("SYSTEM_PROMPT"),
            max_runs: positive("MAX_RUNS")?,
            max_message_bytes,
            model_timeout,
            key_schema,
            owner_index: get("OWNER_INDEX"),
            jwt_audience: get("JWT_AUDIENCE").map(|a| a.trim().to_owned()),
            invoke_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn key_schemas() {
        let c = load(&[("TABLE_NAME", "t"), ("OPENAI_API_KEY", "k")]).unwrap();
        assert_eq!(c.key_schema, crate::store::KeySchema::default());
        assert_eq!(c.owner_index, None);
        let c = load(&[
            ("TABLE_NAME", "t"),
            ("OPENAI_API_KEY", "k"),
            ("PARTITION_KEY", "pk"),
            ("VALUE_ATTRIBUTE", "memory"),
            ("SORT_KEY", "sk"),
            ("SORT_KEY_VALUE", "7"),
            ("SORT_KEY_TYPE", "N"),
        ])
        .unwrap();
        assert_eq!(c.key_schema.partition_key, "pk");
        assert_eq!(
            c.key_schema.sort_key,
            Some(("sk".into(), crate::store::SortValue::N("7".into())))
        );
        for bad in [
            vec![("PARTITION_KEY", "version")],
            vec![("VALUE_ATTRIBUTE", "id")],
            vec![("SORT_KEY", "sk")],
            vec![
                ("SORT_KEY", "sk"),
                ("SORT_KEY_VALUE", "x"),
                ("SORT_KEY_TYPE", "N"),
            ],
            vec![
                ("SORT_KEY", "sk"),
                ("SORT_KEY_VALUE", "x"),
                ("SORT_KEY_TYPE", "B"),
            ],
        ] {
            let mut env = vec![("TABLE_NAME", "t"), ("OPENAI_API_KEY", "k")];
            env.extend(bad.iter().copied());
            assert!(load(&env).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults() {
        let c = load(&[("TABLE_NAME", "t"), ("OPENAI_API_KEY", "sk-x")]).unwrap();
        assert_eq!(c.openai_base_url, DEFAULT_OPENAI_BASE_URL);
        assert_eq!(c.model_id, DEFAULT_MODEL_ID);
        assert_eq!(c.max_message_bytes, 32 * 1024);
        assert_eq!(c.max_runs, None);
        assert_eq!(c.system_prompt, None);
        assert_eq!(c.model_timeout, DEFAULT_MODEL_TIMEOUT);
        assert_eq!(c.invoke_mode, InvokeMode::Buffered);
        assert_eq!(c.jwt_audience, None);
        assert!(
            !format!("{c:?}").contains("sk-x"),
            "the key leaked into Debug"
        );
    }

    #[test]
    fn local_server_needs_no_key() {
        let c = load(&[
            ("TABLE_NAME", "t"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/"),
            ("MAX_RUNS", "10"),
            ("MODEL_TIMEOUT_SECS", "2.5"),
            ("INVOKE_MODE", "response_stream"),
        ])
        .unwrap();
        assert_eq!(c.invoke_mode, InvokeMode::ResponseStream);
        assert_eq!(c.openai_base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(c.openai_api_key, None);
        assert_eq!(c.max_runs, Some(10));
        assert_eq!(c.model_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(load(&[]).unwrap_err(), ConfigError::Missing("TABLE_NAME"));
        assert_eq!(
            load(&[("TABLE_NAME", "t")]).unwrap_err(),
            ConfigError::Missing("OPENAI_API_KEY_SECRET_ID (or OPENAI_API_KEY)")
        );
        let bedrock = load(&[("TABLE_NAME", "t"), ("MODEL_PROVIDER", "Bedrock")]).unwrap();
        assert_eq!(bedrock.provider, Provider::Bedrock);
        assert_eq!(bedrock.model_id, DEFAULT_BEDROCK_MODEL_ID);
        assert_eq!(bedrock.auth_mode, AuthMode::AwsIam);
        let secret = load(&[
            ("TABLE_NAME", "t"),
            ("OPENAI_API_KEY_SECRET_ID", "s"),
            ("AUTH_MODE", "jwt"),
        ])
        .unwrap();
        assert_eq!(secret.openai_api_key_secret_id.as_deref(), Some("s"));
        assert_eq!(secret.auth_mode, AuthMode::Jwt);
        let base = [("TABLE_NAME", "t"), ("OPENAI_API_KEY", "k")];
        for (var, value) in [
            ("MAX_RUNS", "0"),
            ("MAX_RUNS", "ten"),
            ("MAX_MESSAGE_BYTES", "-1"),
            ("MODEL_TIMEOUT_SECS", "0"),
            ("MODEL_TIMEOUT_SECS", "NaN"),
            ("OPENAI_BASE_URL", "ftp://x"),
            ("OPENAI_BASE_URL", "http://"),
            ("MAX_ITEM_BYTES", "1000"),
            ("MAX_ITEM_BYTES", "400000"),
            ("SESSION_TTL_DAYS", "0"),
            ("SESSION_TTL_DAYS", "99999"),
            ("HISTORY_TOKEN_BUDGET", "lots"),
            ("SUMMARIZE", "maybe"),
            ("MODEL_PROVIDER", "llama"),
            ("AUTH_MODE", "basic"),
            ("MEMORY_FORMAT", "json"),
            ("INVOKE_MODE", "stream"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let err = load(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err}");
            assert!(err.contains(value), "{err}");
        }
    }
}
