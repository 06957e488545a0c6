//! Who the caller is. In JWT mode that is the verified `sub` claim: the HTTP API's JWT
//! authorizer (v2 events) checks issuer and audience; the REST API's Cognito user-pool
//! authorizer (v1 events) checks the issuer only, so its claims must also name `JWT_AUDIENCE`
//! when that is set. Otherwise callers are trusted backends, which may name an owner.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::Value;

use super::{ApiError, App, Call};
use crate::config::AuthMode;
use crate::input::{OwnerKey, SessionId, SessionKey};

impl App {
    /// Where `session_id` is stored for this caller: scoped by the verified `sub` in JWT mode,
    /// shared otherwise.
    pub(super) fn session_key(
        &self,
        request: &Request,
        session_id: &SessionId,
    ) -> Result<SessionKey, ApiError> {
        if self.settings.auth_mode != AuthMode::Jwt {
            return Ok(SessionKey::new(session_id, None));
        }
        match self.verified_sub(request) {
            Some(sub) => Ok(SessionKey::new(session_id, Some(sub))),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// The verified `sub` of a JWT caller, if the event carries one.
    fn verified_sub<'r>(&self, request: &'r Request) -> Option<&'r str> {
        let sub = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .and_then(|jwt| jwt.claims.get("sub"))
                .map(String::as_str),
            Some(RequestContext::ApiGatewayV1(context)) => {
                let claims = context.authorizer.fields.get("claims");
                let claim = |name: &str| claims.and_then(|c| c.get(name)).and_then(Value::as_str);
                let audience_ok = match &self.settings.jwt_audience {
                    None => true,
                    Some(audience) => [claim("aud"), claim("client_id")].contains(&Some(audience)),
                };
                claim("sub").filter(|_| audience_ok)
            }
            _ => None,
        };
        sub.filter(|s| !s.is_empty())
    }

    /// Whose sessions a request is about: the verified `sub` in JWT mode (a named owner is
    /// refused there), else the owner a trusted backend names, if any.
    pub(super) fn owner(
        &self,
        request: &Request,
        named: Option<&str>,
    ) -> Result<Option<OwnerKey>, ApiError> {
        if self.settings.auth_mode != AuthMode::Jwt {
            return named
                .map(OwnerKey::parse_user)
                .transpose()
                .map_err(ApiError::from);
        }
        if named.is_some() {
            return Err(ApiError::InvalidRequest(
                "owner is the token's subject in JWT mode; leave it out".into(),
            ));
        }
        match self.verified_sub(request) {
            Some(sub) => Ok(Some(OwnerKey::from_sub(sub))),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// The owner a listing or erase is for: required.
    pub(super) fn owner_of_query(&self, call: &Call<'_>) -> Result<OwnerKey, ApiError> {
        self.owner(call.request, call.param("owner"))?
            .ok_or_else(|| {
                ApiError::InvalidRequest("owner is required: GET /sessions?owner=<user>".into())
            })
    }
}
