//! A gRPC service built on its first request. Reflection decodes and
//! indexes every descriptor the API has: the heaviest step of the API's
//! start (CPU only, and slow under emulation), for a service only tools
//! such as grpcurl ask. The API serves without it; the first reflection
//! call builds it off the async workers and the others share the result.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::OnceCell;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Service, ServiceExt};

type Build<S> = Arc<dyn Fn() -> Result<S, String> + Send + Sync>;

/// `S`, built by `build` when the first request arrives.
pub struct Deferred<S> {
    built: Arc<OnceCell<Result<S, String>>>,
    build: Build<S>,
}

impl<S> Clone for Deferred<S> {
    fn clone(&self) -> Self {
        Deferred { built: self.built.clone(), build: self.build.clone() }
    }
}

impl<S> Deferred<S> {
    pub fn new(build: impl Fn() -> Result<S, String> + Send + Sync + 'static) -> Self {
        Deferred { built: Arc::new(OnceCell::new()), build: Arc::new(build) }
    }

    #[cfg(test)]
    fn is_built(&self) -> bool {
        self.built.initialized()
    }
}

impl<S: NamedService> NamedService for Deferred<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Deferred<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (built, build) = (self.built.clone(), self.build.clone());
        Box::pin(async move {
            let service = built
                .get_or_init(|| async move {
                    match tokio::task::spawn_blocking(move || build()).await {
                        Ok(result) => result,
                        Err(e) => Err(format!("building the service failed: {e}")),
                    }
                })
                .await;
            match service {
                Ok(service) => service.clone().oneshot(request).await,
                Err(e) => Ok(tonic::Status::internal(e.clone()).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone)]
    struct Echo;

    impl NamedService for Echo {
        const NAME: &'static str = "test.Echo";
    }

    impl Service<http::Request<Body>> for Echo {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let status = if request.uri().path() == "/test.Echo/Ok" { 200 } else { 404 };
            std::future::ready(Ok(http::Response::builder().status(status).body(Body::empty()).unwrap()))
        }
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn builds_once_on_the_first_request_and_serves_every_request_with_it() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = builds.clone();
        let service = Deferred::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Echo)
        });
        assert_eq!(<Deferred<Echo> as NamedService>::NAME, "test.Echo");
        assert!(!service.is_built());
        assert_eq!(builds.load(Ordering::SeqCst), 0, "built before any request");
        let calls = (0..8).map(|_| service.clone().oneshot(request("/test.Echo/Ok")));
        for response in futures::future::join_all(calls).await {
            assert_eq!(response.unwrap().status(), 200);
        }
        assert_eq!(service.clone().oneshot(request("/test.Echo/Other")).await.unwrap().status(), 404);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(service.is_built());
    }

    #[tokio::test]
    async fn a_failed_build_answers_internal_naming_why() {
        let service: Deferred<Echo> = Deferred::new(|| Err("bad descriptor".into()));
        let response = service.clone().oneshot(request("/test.Echo/Ok")).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "bad descriptor");
    }
}
