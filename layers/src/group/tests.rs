//! A group over mock members (`service_fn`), to show which member is asked
//! for what.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};

use super::GroupLayer;
use crate::{
    body,
    error::BoxError,
    path::ArtifactPath,
    remote::{Group, Member, Package, Remote, RemoteKind, Remotes, Resolve},
    remote_resolve::ResolvedRemote,
};

fn go_remote(name: &str) -> Remote {
    let mut remote = Remote::proxy(name, format!("http://{name}.example.internal/").parse().unwrap());
    remote.package = Package::parse("go").unwrap();
    remote
}

fn first_group(name: &str, members: &[&str]) -> Remote {
    let mut group = go_remote(name);
    let members = members
        .iter()
        .map(|m| Member { remote: (*m).to_owned(), only_names: Vec::new(), except_names: Vec::new() })
        .collect();
    group.kind = RemoteKind::Group(Group { members, resolve: Resolve::First });
    group
}

/// A request of `path` to the group `group`, as the stack in front of it
/// hands it on.
fn request(group: &Arc<Remote>, path: &str) -> Request<()> {
    let path = ArtifactPath::parse(path, None).unwrap();
    let mut req = Request::get(format!("/{}/{}", group.name, path.raw())).body(()).unwrap();
    if let Some(coordinates) = group.package.format().coordinates(&path) {
        req.extensions_mut().insert(coordinates);
    }
    req.extensions_mut().insert(ResolvedRemote(group.clone()));
    req.extensions_mut().insert(path);
    req
}

/// With `resolve: first`, a file goes to the member whose metadata knows
/// its name, even though an earlier member would answer the file itself:
/// `early` has no version list for the module but serves a zip of it (a
/// planted one); `owner` lists the module.
#[tokio::test]
async fn a_first_groups_file_comes_from_the_member_that_owns_its_name() {
    let group = Arc::new(first_group("all", &["early", "owner"]));
    let remotes = Arc::new(Remotes::new([go_remote("early"), go_remote("owner"), (*group).clone()]));
    let asked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let seen = asked.clone();
    let members = service_fn(move |req: Request<()>| {
        let member = req.extensions().get::<ResolvedRemote>().unwrap().0.name.clone();
        let path = req.extensions().get::<ArtifactPath>().unwrap().decoded().to_owned();
        seen.lock().unwrap().push((member.clone(), path.clone()));
        async move {
            let (status, body) = match (member.as_str(), path.rsplit_once("/@v/").unwrap().1) {
                ("early", "list") => (StatusCode::NOT_FOUND, String::new()),
                ("owner", "list") => (StatusCode::OK, "v1.0.0\n".to_owned()),
                (member, file) => (StatusCode::OK, format!("{member}'s {file}")),
            };
            let mut res = Response::new(body::full(body));
            *res.status_mut() = status;
            Ok::<_, BoxError>(res)
        }
    });
    let svc = GroupLayer::new(remotes, 1 << 20).layer(members);
    let asked_for = |member: &str, path: &str| (member.to_owned(), path.to_owned());

    let res = svc.clone().oneshot(request(&group, "example.com/m/@v/v1.0.0.zip")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "owner's v1.0.0.zip");
    assert_eq!(
        *asked.lock().unwrap(),
        [
            asked_for("early", "example.com/m/@v/list"),
            asked_for("owner", "example.com/m/@v/list"),
            asked_for("owner", "example.com/m/@v/v1.0.0.zip"),
        ],
        "the earlier member is asked for the list only"
    );

    // The owner is remembered: the next file goes straight to it.
    asked.lock().unwrap().clear();
    let res = svc.oneshot(request(&group, "example.com/m/@v/v1.0.0.mod")).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "owner's v1.0.0.mod");
    assert_eq!(*asked.lock().unwrap(), [asked_for("owner", "example.com/m/@v/v1.0.0.mod")]);
}
