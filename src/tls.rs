//! TLS trust for every outbound connection (DynamoDB, Secrets Manager, Bedrock, the
//! OpenAI-compatible model): Mozilla's root certificates, compiled into the binary.
//!
//! Why not the system store: each HTTP stack (the AWS SDK's and reqwest's) would read and parse
//! it at every cold start, about 3 ms each on this project's machines, for the same roots.

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_http_client::Builder;
use base64::Engine as _;

/// The roots as reqwest certificates, for the model client.
pub fn reqwest_roots() -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect()
}

/// The AWS SDK's HTTP client (its rustls stack, as `default-https-client` builds it), trusting
/// the compiled-in roots only.
pub fn aws_http_client() -> Result<SharedHttpClient, String> {
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(roots_pem()))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// The roots as one PEM bundle: the SDK's trust store takes PEM.
fn roots_pem() -> String {
    let mut pem = String::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2048);
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            // Base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_root_is_usable_by_both_stacks() {
        let n = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len();
        assert!(n > 100, "only {n} roots");
        assert_eq!(reqwest_roots().unwrap().len(), n);
        let pem = roots_pem();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), n);
        // The PEM decodes back to the same DER, certificate by certificate.
        let decoded: Vec<Vec<u8>> = pem
            .split("-----BEGIN CERTIFICATE-----\n")
            .skip(1)
            .map(|block| {
                let body: String = block
                    .split("-----END CERTIFICATE-----")
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap()
            })
            .collect();
        let expected: Vec<Vec<u8>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|d| d.to_vec())
            .collect();
        assert_eq!(decoded, expected);
        // reqwest turns every root into a rustls trust anchor here, with the same parser the
        // SDK's connector uses on its first request (where a bad root would panic).
        assert!(reqwest::Client::builder()
            .tls_certs_only(reqwest_roots().unwrap())
            .build()
            .is_ok());
        assert!(aws_http_client().is_ok());
    }
}
