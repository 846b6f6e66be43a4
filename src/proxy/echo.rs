//! The built-in echo upstream (`builtin:echo`): answers with the request it received, as
//! JSON, after the gateway's rewriting. The demo config's upstream, and a way to see
//! exactly what a real upstream would be sent.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};

use super::ProxyBody;
use super::forward::RequestBody;
use super::respond::ProxyError;

/// Reads the request body to its end (counting, not keeping, its bytes) and describes the
/// request: method, path, query, version, headers and body size.
pub async fn respond(request: Request<RequestBody>) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, mut body) = request.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(err) => {
                return Err(match err.downcast::<super::forward::BodyTooLargeError>() {
                    Ok(too_large) => ProxyError::BodyTooLarge {
                        limit: too_large.limit(),
                    },
                    Err(err) => ProxyError::BadRequest(format!(
                        "the request body could not be read ({err})"
                    )),
                });
            }
        }
    }

    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(values) => Value::Array(values),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    let description = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_string_pretty(&description).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
