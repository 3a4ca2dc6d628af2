//! What the HTTP policy tests share: a scripted upstream that logs each attempt, and the
//! request, response and layer they build on. Each test file takes what it needs with
//! `use http_support::*`.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub(crate) use bytes::Bytes;
pub(crate) use http::{Method, Request, Response, StatusCode};
pub(crate) use http_body_util::{BodyExt, Empty, Full};
pub(crate) use resilience_retry::{
    Backoff, Budget, Condition, HttpPolicy, Jitter, RETRY_ATTEMPT, RetryLayer, RetryOn,
};
pub(crate) use resilience_timeout::Deadline;
pub(crate) use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
pub(crate) use tokio::time::Instant;
pub(crate) use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

pub(crate) const MS: Duration = Duration::from_millis(1);

/// What the upstream answers, in order; the last answer repeats.
#[derive(Clone)]
pub(crate) enum Answer {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    WithHeaders(u16, &'static [(&'static str, &'static str)]),
    Refused,
    Reset,
    /// The caller's body broke off (an unexpected end of it, which alone would read as a reset).
    CallerBodyFailed,
    /// An HTTP/2 error, in the source chain of the error as hyper returns it.
    H2(h2::Reason),
}

/// Stands in for `hyper::Error`, which cannot be built outside hyper: an error whose source is
/// the `h2::Error`, as hyper's is.
#[derive(Debug)]
pub(crate) struct Http2Error(pub(crate) h2::Error);

impl std::fmt::Display for Http2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http2 error")
    }
}

impl std::error::Error for Http2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What the upstream saw of one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) at: Instant,
    pub(crate) method: Method,
    pub(crate) attempt: Option<String>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) extensions: usize,
}

pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

pub(crate) fn upstream(
    answers: Vec<Answer>,
) -> (
    impl Service<
        Request<resilience_retry::ReplayBody<Empty<Bytes>>>,
        Response = Response<String>,
        Error = BoxError,
        Future: Send,
    > + Clone,
    Log,
) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let svc = service_fn(move |req: Request<_>| {
        seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: req.method().clone(),
            attempt: req
                .headers()
                .get(RETRY_ATTEMPT)
                .map(|v| v.to_str().unwrap().to_owned()),
            deadline: Deadline::of(&req),
            extensions: req.extensions().len(),
        });
        let mut answers = answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers[0].clone()
        };
        async move {
            match answer {
                Answer::Status(code) => Ok(status(code)),
                Answer::WithHeader(code, name, value) => {
                    let mut res = status(code);
                    res.headers_mut().insert(name, value.parse().unwrap());
                    Ok(res)
                }
                Answer::WithHeaders(code, headers) => {
                    let mut res = status(code);
                    for (name, value) in headers {
                        res.headers_mut().insert(*name, value.parse().unwrap());
                    }
                    Ok(res)
                }
                Answer::Refused => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Answer::Reset => Err(io::Error::from(io::ErrorKind::ConnectionReset).into()),
                Answer::CallerBodyFailed => Err(resilience_core::CallerBodyFailed::new(
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                )
                .into()),
                Answer::H2(reason) => Err(Http2Error(h2::Error::from(reason)).into()),
            }
        }
    });
    (svc, log)
}

pub(crate) fn status(code: u16) -> Response<String> {
    let mut res = Response::new(String::new());
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    res
}

pub(crate) fn request(method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("http://orders/")
        .body(Empty::new())
        .unwrap()
}

pub(crate) fn layer(policy: HttpPolicy) -> RetryLayer<HttpPolicy> {
    RetryLayer::new(policy)
        .backoff(
            Backoff::new(10 * MS, 100 * MS)
                .unwrap()
                .jitter(Jitter::None),
        )
        .budget(Arc::new(
            Budget::new(0.2, 100, Duration::from_secs(10)).unwrap(),
        ))
}

pub(crate) async fn run(
    policy: HttpPolicy,
    answers: Vec<Answer>,
    req: Request<Empty<Bytes>>,
) -> (u16, Vec<Seen>) {
    let (inner, log) = upstream(answers);
    let response = layer(policy).layer(inner).oneshot(req).await;
    let code = match response {
        Ok(res) => res.status().as_u16(),
        Err(_) => 0,
    };
    let seen = log.lock().unwrap().clone();
    (code, seen)
}

/// What `resilience-breaker`'s `BreakerOpen` is: an error whose sources hold
/// `resilience_core::RefusedLocally`, a refusal inside the process that sent nothing.
#[derive(Debug)]
pub(crate) struct OpenBreaker;

impl std::fmt::Display for OpenBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("circuit breaker is open")
    }
}

impl std::error::Error for OpenBreaker {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&resilience_core::RefusedLocally)
    }
}
