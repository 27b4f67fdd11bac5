//! Plain HTTP requests to the app, for what a browser hides: headers, cookies' attributes,
//! and forged POSTs.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The value of the header `name`; fails if it is absent.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {self:#?}"))
    }

    /// The whole `Set-Cookie` header for the cookie `name`, if the response sets it.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value the response gives the cookie `name` (`name=value` only, ready to send back).
    #[track_caller]
    pub fn cookie_pair(&self, name: &str) -> String {
        let header = self
            .set_cookie(name)
            .unwrap_or_else(|| panic!("the response sets no {name} cookie: {self:#?}"));
        header.split(';').next().unwrap_or_default().to_owned()
    }

    /// The value of the hidden form field `name` in the body; fails if there is none.
    #[track_caller]
    pub fn form_field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} field in the page:\n{}", self.body))
            + marker.len();
        let len = self.body[start..].find('"').unwrap_or_default();
        self.body[start..start + len].to_owned()
    }
}

/// GET `url`, sending `cookies` (a `Cookie` header value) if given.
pub async fn get(url: &str, cookies: Option<&str>) -> Reply {
    send(Method::GET, url, cookies, None).await
}

/// POST the form `fields` to `url`, sending `cookies` if given.
pub async fn post_form(url: &str, cookies: Option<&str>, fields: &[(&str, &str)]) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    send(Method::POST, url, cookies, Some(body)).await
}

/// Sends one request, following no redirect.
async fn send(method: Method, url: &str, cookies: Option<&str>, form: Option<String>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method.clone()).uri(url);
    if let Some(cookies) = cookies {
        request = request.header(header::COOKIE, cookies);
    }
    if form.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .expect("a valid request");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} took over {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: cannot read the body: {e}"))
        .to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
