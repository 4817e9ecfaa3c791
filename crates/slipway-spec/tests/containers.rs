//! Container services: `image:` instead of `run:`, per environment.

mod support;

use support::{hint, problems, single, valid, valid_env};

#[test]
fn an_image_service_runs_a_container_with_an_optional_command() {
    let spec = valid(
        "app: a\nservices:\n  api:\n    image: clinic/api:1.4\n    command: [/bin/httpd, -f, -p, $PORT]\n    resources: { memory: 64Mi }\n",
    );
    let api = &spec.services["api"];
    assert!(api.is_container());
    assert_eq!(api.image.as_deref(), Some("clinic/api:1.4"));
    assert_eq!(
        api.command.as_deref(),
        Some(&["/bin/httpd", "-f", "-p", "$PORT"].map(String::from)[..])
    );
    assert!(api.run.is_empty());
    assert_eq!(api.resources.memory_bytes, Some(64 << 20));
}

#[test]
fn a_process_service_keeps_its_digest() {
    let spec = valid("app: a\nservices:\n  web:\n    run: [x]\n");
    let json = serde_json::to_string(&spec.services["web"]).unwrap();
    assert!(
        !json.contains("image") && !json.contains("command"),
        "{json}"
    );
    assert!(!spec.services["web"].is_container());
}

#[test]
fn a_service_needs_run_or_image() {
    let d = single("app: a\nservices:\n  web:\n    port: auto\n", 3, 3);
    assert_eq!(d.message, "missing `run` or `image` in service `web`");
    assert!(hint(&d).contains("`image: name:tag`"), "{}", hint(&d));
}

#[test]
fn a_service_cannot_have_both() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    image: web:1\n",
        5,
        5,
    );
    assert_eq!(
        d.message,
        "service `web` has both `run` (line 4) and `image`"
    );
}

#[test]
fn keys_of_the_other_kind_are_reported_where_they_are() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    command: [y]\n",
        5,
        5,
    );
    assert_eq!(
        d.message,
        "`command` applies to container services (`image`), not to `web`"
    );
    let found = problems(
        "app: a\nservices:\n  api:\n    image: api:1\n    build: [make]\n    volumes: { data: ./data }\n",
    );
    let at: Vec<(usize, usize)> = found.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(5, 5), (6, 5)], "{found:#?}");
    assert!(
        found[0]
            .message
            .starts_with("`build` applies to native processes")
    );
    let d = single("app: a\nservices:\n  api:\n    image: \"api 1\"\n", 4, 12);
    assert_eq!(d.message, "bad image `api 1`");
}

#[test]
fn an_environment_can_run_a_process_service_as_a_container_and_back() {
    let source = "app: a\nservices:\n  api:\n    run: [./api]\nenvironments:\n  production:\n    services:\n      api: { image: clinic/api:1.4 }\n  staging:\n    services:\n      api: { run: [./api-staging] }\n";
    let development = valid_env(source, "development");
    assert_eq!(development.services["api"].run, ["./api"]);
    let production = valid_env(source, "production");
    assert!(production.services["api"].run.is_empty());
    assert_eq!(
        production.services["api"].image.as_deref(),
        Some("clinic/api:1.4")
    );
    let containers = "app: a\nservices:\n  api:\n    image: api:1\n    command: [serve]\nenvironments:\n  development:\n    services:\n      api: { run: [./api] }\n";
    let development = valid(containers);
    assert_eq!(development.services["api"].run, ["./api"]);
    assert_eq!(development.services["api"].image, None);
    assert_eq!(development.services["api"].command, None);
}

#[test]
fn an_environment_that_runs_a_container_drops_how_the_process_was_made_but_keeps_its_release() {
    // `workdir`, `build`, `artifact`, `test` and `volumes` make and run the native code,
    // which the image replaces.
    let source = "app: a\nservices:\n  api:\n    run: [./api]\n    workdir: api\n    build: [make]\n    test: [make, test]\n    artifact: out/api\n    volumes: { data: ./data }\n    env: { MODE: web }\nenvironments:\n  production:\n    services:\n      api: { image: clinic/api:1.4, dockerfile: api/Dockerfile }\n";
    let production = valid_env(source, "production");
    let api = &production.services["api"];
    assert!(api.is_container());
    assert_eq!(api.build, None);
    assert_eq!(api.test, None);
    assert_eq!(api.artifact, None);
    assert!(api.volumes.is_empty());
    assert_eq!(api.env["MODE"], "web");
    assert_eq!(valid(source).services["api"].run, ["./api"]);
    // A release command (a migration) stays: it runs in a container of the image.
    let with_release = "app: a\nservices:\n  api:\n    run: [./api]\n    release: [./api, migrate]\nenvironments:\n  production:\n    services:\n      api: { image: clinic/api:1.4 }\n";
    let production = valid_env(with_release, "production");
    assert_eq!(
        production.services["api"].release.as_deref(),
        Some(&["./api".to_owned(), "migrate".to_owned()][..])
    );
}

#[test]
fn an_image_can_be_built_from_a_dockerfile_at_deploy_time() {
    let spec =
        valid("app: a\nservices:\n  api:\n    image: api:dev\n    dockerfile: api/Dockerfile\n");
    assert_eq!(
        spec.services["api"].dockerfile.as_deref(),
        Some(std::path::Path::new("/srv/shop/api/Dockerfile"))
    );
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    dockerfile: Dockerfile\n",
        5,
        5,
    );
    assert_eq!(
        d.message,
        "`dockerfile` applies to container services (`image`), not to `web`"
    );
}
