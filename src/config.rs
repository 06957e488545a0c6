//! Configuration, read from the environment once per cold start.

use std::fmt;
use std::time::Duration;

use crate::memory::Format;
use crate::store::{attr, KeySchema, SortValue};

/// OpenAI's API; any OpenAI-compatible server can stand in via `OPENAI_BASE_URL`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL_ID: &str = "gpt-4.1-mini";
pub const DEFAULT_BEDROCK_MODEL_ID: &str = "amazon.nova-lite-v1:0";
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const DEFAULT_MODEL_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_HISTORY_TOKEN_BUDGET: u64 = 8000;
/// How often a streamed reply's pieces are written while it is written (`LIVE_WRITE_MS`).
pub const DEFAULT_LIVE_WRITE_MS: u64 = 1000;

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
    /// `MAX_ITEM_BYTES`: a run over half of it is spilled into parts (its item keeps a shortened
    /// text); the most `VIEW_BYTES` may be.
    pub max_item_bytes: usize,
    /// `SESSION_TTL_DAYS`: sessions expire this many days after their last message.
    pub session_ttl_days: Option<u64>,
    /// `HISTORY_TOKEN_BUDGET`: the most history (estimated tokens) sent with a prompt.
    pub history_token_budget: u64,
    /// `SUMMARIZE`: fold the runs that leave the prompt window, when it steps, into a running
    /// summary (`true` by default; see docs/context.md).
    pub summarize: bool,
    /// `RESUMABLE_STREAMS`: a streamed reply's pieces are kept while it is written, so a client
    /// can follow it after a reload (`true` by default; docs/storage.md, "Replies in progress").
    pub resumable_streams: bool,
    /// `LIVE_WRITE_MS`: how often a streamed reply's pieces are written (1,000 by default).
    pub live_write: Duration,
    /// `PROMPT_CACHE`: `auto` (default: cache points for Bedrock models that take them) or
    /// `off`.
    pub prompt_cache: bool,
    /// `MEMORY_FORMAT`: `seed` (default) or `griptape`, for new sessions.
    pub memory_format: Format,
    /// `VIEW_BYTES`: the size of griptape's view in a log session's item.
    pub view_bytes: usize,
    /// `PARTITION_KEY`, `VALUE_ATTRIBUTE`, `SORT_KEY` / `SORT_KEY_VALUE` / `SORT_KEY_TYPE`: the
    /// table's key schema, as griptape's driver names it.
    pub key_schema: KeySchema,
    /// `OWNER_INDEX`: the global secondary index that lists a user's sessions; unset, listing
    /// is off.
    pub owner_index: Option<String>,
    /// `JWT_AUDIENCE`: in JWT mode, the audience (app client id) a REST API Cognito
    /// authorizer's claims must carry (`aud` of an ID token, `client_id` of an access token).
    pub jwt_audience: Option<String>,
    /// `INVOKE_MODE`: `BUFFERED` (default) or `RESPONSE_STREAM`.
    pub invoke_mode: InvokeMode,
    /// `METRICS_NAMESPACE`: the CloudWatch namespace of the metrics (default `SessionChat`).
    pub metrics_namespace: String,
    /// `QUOTA_TURNS_PER_MINUTE`: turns one owner may start in a minute; unset, no limit.
    pub quota_turns_per_minute: Option<u64>,
    /// `QUOTA_TOKENS_PER_DAY`: model tokens (in and out, as the provider reports them) one
    /// owner may spend in a UTC day; unset, no limit.
    pub quota_tokens_per_day: Option<u64>,
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
        let env = Env(get);
        let table_name = env
            .get("TABLE_NAME")
            .ok_or(ConfigError::Missing("TABLE_NAME"))?;
        let openai_base_url = env.base_url()?;
        let provider = env.provider()?;
        let auth_mode = env.auth_mode()?;
        let openai_api_key = env.get("OPENAI_API_KEY").map(Secret::new);
        let openai_api_key_secret_id = env.get("OPENAI_API_KEY_SECRET_ID");
        // A local OpenAI-compatible server needs no key; OpenAI itself does.
        if provider == Provider::OpenAi
            && openai_api_key.is_none()
            && openai_api_key_secret_id.is_none()
            && openai_base_url == DEFAULT_OPENAI_BASE_URL
        {
            return Err(ConfigError::Missing(
                "OPENAI_API_KEY_SECRET_ID (or OPENAI_API_KEY)",
            ));
        }
        let max_message_bytes = env.max_message_bytes()?;
        let model_timeout = env.model_timeout()?;
        let max_item_bytes = env.max_item_bytes()?;
        let session_ttl_days = env.session_ttl_days()?;
        let summarize = env.flag("SUMMARIZE", true)?;
        let resumable_streams = env.flag("RESUMABLE_STREAMS", true)?;
        let live_write = Duration::from_millis(
            env.positive("LIVE_WRITE_MS")?
                .unwrap_or(DEFAULT_LIVE_WRITE_MS)
                .max(50),
        );
        let prompt_cache = env.prompt_cache()?;
        let memory_format = env.memory_format()?;
        // One layout since 2026-12-07: an old setting other than `log` must not pass silently.
        env.one_of(
            "STORAGE_LAYOUT",
            (),
            &[("log", ())],
            "log or unset (the only layout: remove the variable; sessions of the item layout move into the log on their next turn)",
        )?;
        let view_bytes = env.view_bytes(max_item_bytes)?;
        let key_schema = env.key_schema()?;
        let invoke_mode = env.invoke_mode()?;
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
            resumable_streams,
            live_write,
            prompt_cache,
            memory_format,
            view_bytes,
            max_item_bytes,
            session_ttl_days,
            history_token_budget: env
                .positive("HISTORY_TOKEN_BUDGET")?
                .unwrap_or(DEFAULT_HISTORY_TOKEN_BUDGET),
            openai_base_url,
            openai_api_key,
            model_id: env
                .get("MODEL_ID")
                .unwrap_or_else(|| default_model.to_owned()),
            system_prompt: env.get("SYSTEM_PROMPT"),
            max_runs: env.positive("MAX_RUNS")?,
            max_message_bytes,
            model_timeout,
            key_schema,
            owner_index: env.get("OWNER_INDEX"),
            jwt_audience: env.get("JWT_AUDIENCE").map(|a| a.trim().to_owned()),
            invoke_mode,
            metrics_namespace: env.metrics_namespace()?,
            quota_turns_per_minute: env.positive("QUOTA_TURNS_PER_MINUTE")?,
            quota_tokens_per_day: env.positive("QUOTA_TOKENS_PER_DAY")?,
        })
    }
}

fn invalid(var: &'static str, value: impl Into<String>, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.into(),
        expected,
    }
}

/// The variables as configuration reads them, and how each kind of value is checked.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// A variable's value; empty (or blank) counts as unset.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    /// One of `choices` (matched ignoring case and surrounding space), `default` when unset.
    fn one_of<T: Copy>(
        &self,
        var: &'static str,
        default: T,
        choices: &[(&str, T)],
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(var) else {
            return Ok(default);
        };
        let word = value.trim();
        let found = choices.iter().find(|(w, _)| word.eq_ignore_ascii_case(w));
        found
            .map(|(_, t)| *t)
            .ok_or_else(|| invalid(var, value, expected))
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`; `default` when unset.
    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let words = [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ];
        self.one_of(var, default, &words, "true or false")
    }

    /// A whole number above 0, if set.
    fn positive(&self, var: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(var) else {
            return Ok(None);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(var, value, "a positive whole number")),
        }
    }

    fn provider(&self) -> Result<Provider, ConfigError> {
        let choices = [("openai", Provider::OpenAi), ("bedrock", Provider::Bedrock)];
        let expected = "openai or bedrock";
        self.one_of("MODEL_PROVIDER", Provider::OpenAi, &choices, expected)
    }

    fn auth_mode(&self) -> Result<AuthMode, ConfigError> {
        let choices = [
            ("AWS_IAM", AuthMode::AwsIam),
            ("JWT", AuthMode::Jwt),
            ("NONE", AuthMode::None),
        ];
        let expected = "AWS_IAM, JWT or NONE";
        self.one_of("AUTH_MODE", AuthMode::AwsIam, &choices, expected)
    }

    fn prompt_cache(&self) -> Result<bool, ConfigError> {
        let choices = [("auto", true), ("off", false)];
        self.one_of("PROMPT_CACHE", true, &choices, "auto or off")
    }

    fn memory_format(&self) -> Result<Format, ConfigError> {
        let choices = [("seed", Format::Seed), ("griptape", Format::Griptape)];
        self.one_of("MEMORY_FORMAT", Format::Seed, &choices, "seed or griptape")
    }

    fn invoke_mode(&self) -> Result<InvokeMode, ConfigError> {
        let choices = [
            ("BUFFERED", InvokeMode::Buffered),
            ("RESPONSE_STREAM", InvokeMode::ResponseStream),
        ];
        let expected = "BUFFERED or RESPONSE_STREAM";
        self.one_of("INVOKE_MODE", InvokeMode::Buffered, &choices, expected)
    }

    /// `OPENAI_BASE_URL`, without a trailing slash.
    fn base_url(&self) -> Result<String, ConfigError> {
        let Some(url) = self.get("OPENAI_BASE_URL") else {
            return Ok(DEFAULT_OPENAI_BASE_URL.to_owned());
        };
        let url = url.trim().trim_end_matches('/').to_owned();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|host| host.is_empty()) {
            return Err(invalid(
                "OPENAI_BASE_URL",
                url,
                "an http:// or https:// URL",
            ));
        }
        Ok(url)
    }

    fn max_message_bytes(&self) -> Result<usize, ConfigError> {
        let var = "MAX_MESSAGE_BYTES";
        match self.positive(var)? {
            Some(n) => usize::try_from(n)
                .map_err(|_| invalid(var, n.to_string(), "a byte count this machine can hold")),
            None => Ok(DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    fn model_timeout(&self) -> Result<Duration, ConfigError> {
        let Some(value) = self.get("MODEL_TIMEOUT_SECS") else {
            return Ok(DEFAULT_MODEL_TIMEOUT);
        };
        match value.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 900.0 => Ok(Duration::from_secs_f64(secs)),
            _ => Err(invalid(
                "MODEL_TIMEOUT_SECS",
                value,
                "a number of seconds above 0 and at most 900",
            )),
        }
    }

    fn max_item_bytes(&self) -> Result<usize, ConfigError> {
        match self.positive("MAX_ITEM_BYTES")? {
            Some(n) if (4096..=350_000).contains(&n) => Ok(n as usize),
            Some(n) => Err(invalid(
                "MAX_ITEM_BYTES",
                n.to_string(),
                "between 4096 and 350000 (DynamoDB items stop at 400 KB)",
            )),
            None => Ok(crate::store::DEFAULT_MAX_ITEM_BYTES),
        }
    }

    fn view_bytes(&self, max_item_bytes: usize) -> Result<usize, ConfigError> {
        match self.positive("VIEW_BYTES")? {
            Some(n) if (256..=max_item_bytes as u64).contains(&n) => Ok(n as usize),
            Some(n) => Err(invalid(
                "VIEW_BYTES",
                n.to_string(),
                "between 256 and MAX_ITEM_BYTES",
            )),
            None => Ok(crate::store::log::DEFAULT_VIEW_BYTES),
        }
    }

    /// CloudWatch's rule for a namespace: 1-255 of letters, digits and `.-_/#: `, and not `AWS/`.
    fn metrics_namespace(&self) -> Result<String, ConfigError> {
        let Some(value) = self.get("METRICS_NAMESPACE") else {
            return Ok(crate::metrics::DEFAULT_NAMESPACE.to_owned());
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
        if value.len() > 255 || !value.chars().all(allowed) || value.starts_with("AWS/") {
            return Err(invalid(
                "METRICS_NAMESPACE",
                value,
                "1-255 letters, digits or . - _ / # : space, not starting with AWS/",
            ));
        }
        Ok(value)
    }

    fn session_ttl_days(&self) -> Result<Option<u64>, ConfigError> {
        match self.positive("SESSION_TTL_DAYS")? {
            Some(days) if days > 36_500 => Err(invalid(
                "SESSION_TTL_DAYS",
                days.to_string(),
                "a number of days up to 36500",
            )),
            days => Ok(days),
        }
    }

    /// An attribute name of the key schema: DynamoDB's are 1-255 bytes, and ours must stay ours.
    fn attribute_name(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_owned());
        if value.is_empty() || value.len() > 255 || attr::is_reserved(&value) {
            return Err(invalid(
                var,
                value,
                "an attribute name of 1-255 bytes that session-chat does not use itself",
            ));
        }
        Ok(value)
    }

    /// `PARTITION_KEY`, `VALUE_ATTRIBUTE` and the sort key, as griptape's driver names them.
    fn key_schema(&self) -> Result<KeySchema, ConfigError> {
        let partition_key = self.attribute_name("PARTITION_KEY", "id")?;
        let value_attribute = self.attribute_name("VALUE_ATTRIBUTE", "value")?;
        let sort_key = self.sort_key()?;
        let names: Vec<&str> = [partition_key.as_str(), value_attribute.as_str()]
            .into_iter()
            .chain(sort_key.as_ref().map(|(k, _)| k.as_str()))
            .collect();
        if names
            .iter()
            .enumerate()
            .any(|(i, a)| names[..i].contains(a))
        {
            return Err(invalid(
                "VALUE_ATTRIBUTE",
                value_attribute,
                "names different from PARTITION_KEY and SORT_KEY",
            ));
        }
        Ok(KeySchema {
            partition_key,
            value_attribute,
            sort_key,
        })
    }

    /// `SORT_KEY` with `SORT_KEY_VALUE` (both or neither), typed by `SORT_KEY_TYPE`.
    fn sort_key(&self) -> Result<Option<(String, SortValue)>, ConfigError> {
        // Read whether or not there is a sort key: the template check sees every variable
        // read, and without SORT_KEY a type alone means nothing.
        let sort_key_type = self.get("SORT_KEY_TYPE");
        let value = match (self.get("SORT_KEY"), self.get("SORT_KEY_VALUE")) {
            (None, None) => return Ok(None),
            (Some(_), Some(value)) => value,
            (_, value) => {
                let value = value.unwrap_or_default();
                return Err(invalid(
                    "SORT_KEY_VALUE",
                    value,
                    "set together with SORT_KEY",
                ));
            }
        };
        let key = self.attribute_name("SORT_KEY", "")?;
        let typed = match sort_key_type.as_deref().map(str::trim) {
            None | Some("S") | Some("s") => SortValue::S(value),
            Some("N") | Some("n") if value.trim().parse::<f64>().is_ok() => {
                SortValue::N(value.trim().to_owned())
            }
            Some("N") | Some("n") => {
                return Err(invalid(
                    "SORT_KEY_VALUE",
                    value,
                    "a number, with SORT_KEY_TYPE=N",
                ))
            }
            Some(other) => return Err(invalid("SORT_KEY_TYPE", other, "S or N")),
        };
        Ok(Some((key, typed)))
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
        let quotas = load(&[
            ("TABLE_NAME", "t"),
            ("OPENAI_API_KEY", "k"),
            ("QUOTA_TURNS_PER_MINUTE", "20"),
            ("QUOTA_TOKENS_PER_DAY", ""),
            ("METRICS_NAMESPACE", "Team/Chat Prod"),
        ])
        .unwrap();
        assert_eq!(
            (quotas.quota_turns_per_minute, quotas.quota_tokens_per_day),
            (Some(20), None),
            "empty is unset: no quota"
        );
        assert_eq!(quotas.metrics_namespace, "Team/Chat Prod");
        assert_eq!(load(&base).unwrap().metrics_namespace, "SessionChat");
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
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("METRICS_NAMESPACE", "not{this}"),
            ("QUOTA_TURNS_PER_MINUTE", "many"),
            ("QUOTA_TOKENS_PER_DAY", "-5"),
            ("STORAGE_LAYOUT", "item"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let err = load(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err}");
            assert!(err.contains(value), "{err}");
        }
        let mut log = base.to_vec();
        log.push(("STORAGE_LAYOUT", "log"));
        assert!(load(&log).is_ok(), "the one layout may still be named");
        let mut item = base.to_vec();
        item.push(("STORAGE_LAYOUT", "item"));
        let err = load(&item).unwrap_err().to_string();
        assert!(
            err.contains("remove the variable"),
            "says what to do: {err}"
        );
    }
}
