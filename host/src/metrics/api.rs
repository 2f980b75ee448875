//! API figures: requests by method and gRPC code, and requests in flight.
//! A tower layer in front of the authorization layer counts every call,
//! refused ones included. A call is counted when its response body ends
//! (the code of a stream is in its trailers) or is dropped (`Cancelled`
//! when it never finished).

use super::Labels;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tonic::{Code, Status};

struct ApiFigures {
    requests: Family<Labels, Counter>,
    in_flight: Gauge,
}

static API: LazyLock<ApiFigures> =
    LazyLock::new(|| ApiFigures { requests: Family::default(), in_flight: Gauge::default() });

/// Adds the API families to a scrape's registry.
pub(super) fn register(registry: &mut Registry) {
    let api = registry.sub_registry_with_prefix("api");
    api.register("requests", "Finished API requests by method and gRPC code", API.requests.clone());
    api.register("requests_in_flight", "API requests being served (streams included)", API.in_flight.clone());
}

/// The method label: a method of the authorization table (the path without
/// its leading `/`), or `unknown` (the path is the client's choice).
pub fn method_label(path: &str) -> String {
    let rule = crate::api::authz::rule_for(path);
    if rule.method.is_empty() { "unknown".to_string() } else { rule.method.trim_start_matches('/').to_string() }
}

/// `PermissionDenied`, `Ok`...: the gRPC code's name.
pub fn code_label(code: Code) -> String {
    format!("{code:?}")
}

/// Counts every request it passes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiMetricsLayer;

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
}

/// One request in flight; records it when dropped.
struct InFlight {
    method: String,
    code: Option<Code>,
}

impl InFlight {
    fn start(method: String) -> Self {
        API.in_flight.inc();
        InFlight { method, code: None }
    }

    fn end(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        API.in_flight.dec();
        let code = self.code.unwrap_or(Code::Cancelled);
        API.requests.get_or_create(&vec![("method", self.method.clone()), ("code", code_label(code))]).inc();
    }
}

impl<S, B> tower::Service<Request<B>> for ApiMetricsService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut flight = InFlight::start(method_label(req.uri().path()));
        let future = self.inner.call(req);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    // Trailers-only responses (unary errors, refusals) carry
                    // the status in the headers.
                    flight.code = Status::from_header_map(response.headers()).map(|s| s.code());
                    let (parts, body) = response.into_parts();
                    let body = tonic::body::Body::new(CountedBody { inner: body, flight });
                    Ok(Response::from_parts(parts, body))
                }
                Err(e) => {
                    flight.end(Code::Internal);
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records its call's code when it ends.
struct CountedBody {
    inner: tonic::body::Body,
    flight: InFlight,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = <tonic::body::Body as Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && self.flight.code.is_none()
                {
                    // No grpc-status in the trailers is a broken response.
                    let code = Status::from_header_map(trailers).map(|s| s.code()).unwrap_or(Code::Unknown);
                    self.flight.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) if self.flight.code.is_none() => self.flight.code = Some(Code::Internal),
            // The end of a body without trailers: the headers said it all.
            Poll::Ready(None) if self.flight.code.is_none() => self.flight.code = Some(Code::Ok),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_table_are_unknown() {
        assert_eq!(method_label("/bronze.v1.MachineService/Version"), "bronze.v1.MachineService/Version");
        assert_eq!(method_label("/evil\"\n/x"), "unknown");
        assert_eq!(method_label(&"/a".repeat(10_000)), "unknown");
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(code_label(Code::Ok), "Ok");
        assert_eq!(code_label(Code::PermissionDenied), "PermissionDenied");
    }
}
