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
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request};
use axum::response::Response;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;

use super::{App, endpoint};

/// Which hot handler a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Hot {
    Unified,
    /// `/mcp/<serverID>`: the id is the rest of the path.
    Routed,
}

/// Where a routed path's server id starts.
const ROUTED_PREFIX: &str = "/mcp/";

/// The hot handler of a `POST` to `path`, if it has one.
fn hot_route(path: &str) -> Option<Hot> {
    if path == "/mcp" {
        return Some(Hot::Unified);
    }
    let id = path.strip_prefix(ROUTED_PREFIX)?;
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then_some(Hot::Routed)
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

    /// The service a connection runs. Its future is a plain enum of the hot
    /// handler's and the router's, not a box: hyper keeps one slot for it per
    /// connection, so a request allocates no future of its own.
    pub(super) fn service(
        self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        hyper::service::service_fn(move |request| self.answer(request))
    }

    fn answer(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        if request.method() == Method::POST
            && let Some(hot) = hot_route(request.uri().path())
        {
            let app = Arc::clone(&self.app);
            let (parts, body) = request.into_parts();
            let body = Body::new(body);
            return Either::Left(async move {
                Ok(match hot {
                    Hot::Unified => endpoint::unified_post(State(app), parts.headers, body).await,
                    Hot::Routed => {
                        let id = &parts.uri.path()[ROUTED_PREFIX.len()..];
                        endpoint::routed_post(&app, id, parts.headers, body).await
                    }
                })
            });
        }
        Either::Right(hyper::service::Service::call(&self.router, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper keeps one future slot per connection, sized by the largest way
    /// a request can take inline: the rare ways are boxed so that an idle
    /// connection does not pay for them (docs/ARCHITECTURE.md). A bound,
    /// with room: the two POST handlers measured 1,2xx bytes when it was set.
    #[tokio::test]
    async fn the_hot_handlers_futures_stay_small() {
        const BOUND: usize = 2048;
        let vars = std::collections::HashMap::<String, String>::new();
        let config = crate::config::Config::parse(
            std::path::Path::new("test.toml"),
            "[servers.s]\ncommand = \"true\"\n",
            &vars,
        )
        .expect("a valid config");
        let core = Arc::new(crate::core::Core::new(config.gateway, config.servers, None));
        let app = Arc::new(App::serving(core));
        // Built, never polled: nothing runs.
        let headers = axum::http::HeaderMap::new();
        let routed = endpoint::routed_post(&app, "s", headers.clone(), Body::empty());
        let unified = endpoint::unified_post(State(Arc::clone(&app)), headers, Body::empty());
        let (routed, unified) = (size_of_val(&routed), size_of_val(&unified));
        assert!(routed <= BOUND, "a routed POST's future is {routed} bytes");
        assert!(
            unified <= BOUND,
            "a unified POST's future is {unified} bytes"
        );
    }

    #[test]
    fn only_posts_to_the_mcp_paths_with_plain_ids_take_the_hot_path() {
        assert_eq!(hot_route("/mcp"), Some(Hot::Unified));
        assert_eq!(hot_route("/mcp/everything"), Some(Hot::Routed));
        assert_eq!(hot_route("/mcp/a.b-c_1"), Some(Hot::Routed));
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
