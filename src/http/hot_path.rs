//! The hot path: a `POST` to `/mcp` or `/mcp/<serverID>` goes straight to its
//! handler, past the router.
//!
//! Owns telling those requests from every other one (by method and path
//! alone) and handing the rest to the router unchanged. A server id with
//! anything but the characters a config may give one (a `%`-escape, say) takes
//! the router's way, so the two ways never disagree on what a path means. It
//! never looks at headers or the body, and answers nothing itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;

use super::{App, endpoint};

/// Which hot handler a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Hot {
    Unified,
    /// `/mcp/<serverID>`, with the id.
    Routed(String),
}

/// The hot handler of a `POST` to `path`, if it has one.
fn hot_route(path: &str) -> Option<Hot> {
    if path == "/mcp" {
        return Some(Hot::Unified);
    }
    let id = path.strip_prefix("/mcp/")?;
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| Hot::Routed(id.to_owned()))
}

/// The gateway's HTTP service: the hot path, else the router.
#[derive(Clone)]
pub(super) struct Dispatch {
    app: Arc<App>,
    router: TowerToHyperService<axum::Router>,
}

impl Dispatch {
    pub(super) fn new(app: Arc<App>, router: axum::Router) -> Dispatch {
        Dispatch {
            app,
            router: TowerToHyperService::new(router),
        }
    }
}

type Answering = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, request: Request<Incoming>) -> Answering {
        if request.method() == Method::POST
            && let Some(hot) = hot_route(request.uri().path())
        {
            let app = Arc::clone(&self.app);
            let (parts, body) = request.into_parts();
            let body = Body::new(body);
            return Box::pin(async move {
                Ok(match hot {
                    Hot::Unified => endpoint::unified_post(State(app), parts.headers, body).await,
                    Hot::Routed(id) => {
                        endpoint::post(State(app), Ok(Path(id)), parts.headers, body).await
                    }
                })
            });
        }
        let answer = hyper::service::Service::call(&self.router, request);
        Box::pin(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_posts_to_the_mcp_paths_with_plain_ids_take_the_hot_path() {
        assert_eq!(hot_route("/mcp"), Some(Hot::Unified));
        assert_eq!(
            hot_route("/mcp/everything"),
            Some(Hot::Routed("everything".into()))
        );
        assert_eq!(
            hot_route("/mcp/a.b-c_1"),
            Some(Hot::Routed("a.b-c_1".into()))
        );
        for router_way in [
            "/mcp/",
            "/mcp/%FF%FE",
            "/mcp/a/b",
            "/mcpx",
            "/readyz",
            "/mcp/a b",
        ] {
            assert_eq!(hot_route(router_way), None, "{router_way}");
        }
    }
}
