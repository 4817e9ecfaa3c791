//! Build, test and release commands, the build artifact, and secrets.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{hint, positions, service, single, valid};

#[test]
fn commands_and_the_artifact_resolve() {
    let spec = valid(&service(
        "    workdir: api\n    build: [cargo, build, --release]\n    artifact: target/release/api\n    test: [cargo, test]\n    release: [./api, migrate]\n    release_timeout: 90s\n",
    ));
    let web = &spec.services["web"];
    assert_eq!(
        web.build.as_deref(),
        Some(&["cargo", "build", "--release"].map(String::from)[..])
    );
    assert_eq!(
        web.artifact,
        Some(PathBuf::from("/srv/shop/api/target/release/api"))
    );
    assert_eq!(
        web.test.as_deref(),
        Some(&["cargo", "test"].map(String::from)[..])
    );
    assert_eq!(
        web.release.as_deref(),
        Some(&["./api", "migrate"].map(String::from)[..])
    );
    assert_eq!(web.release_timeout, Duration::from_secs(90));

    let none = &valid(&service("")).services["web"];
    assert_eq!(
        (&none.build, &none.artifact, &none.test, &none.release),
        (&None, &None, &None, &None)
    );
    assert_eq!(none.release_timeout, Duration::from_secs(300));
}

#[test]
fn an_artifact_may_stand_alone_and_resolves_like_a_path() {
    let artifact = |yaml: &str| valid(&service(yaml)).services["web"].artifact.clone();
    assert_eq!(
        artifact("    artifact: ../dist/./app.tar\n"),
        Some(PathBuf::from("/srv/dist/app.tar"))
    );
    assert_eq!(
        artifact("    artifact: /opt/app/bin\n"),
        Some(PathBuf::from("/opt/app/bin"))
    );
    let d = single(&service("    artifact: \"\"\n"), 5, 15);
    assert_eq!(d.message, "`services.web.artifact` must not be empty");
}

#[test]
fn commands_are_non_empty_lists() {
    let d = single(&service("    build: []\n"), 5, 12);
    assert_eq!(d.message, "`services.web.build` is empty");
    assert_eq!(
        hint(&d),
        "list the program and its arguments, e.g. `[\"make\", \"all\"]`, or remove the key"
    );

    let d = single(&service("    test: cargo test --all\n"), 5, 11);
    assert_eq!(
        d.message,
        "`services.web.test` must be a list, not a string"
    );
    assert_eq!(
        hint(&d),
        "write the command as a list of arguments: `test: [\"cargo\", \"test\", \"--all\"]`"
    );

    let d = single(&service("    release: [\"\", migrate]\n"), 5, 15);
    assert_eq!(d.message, "the program in `release` is empty");
    assert_eq!(
        hint(&d),
        "the first item of `release` is the program to start, e.g. `./migrate`"
    );

    let d = single(&service("    release_timeout: 0s\n"), 5, 22);
    assert_eq!(
        d.message,
        "`services.web.release_timeout` must be longer than 0"
    );
    let d = single(&service("    release_timeout: 5\n"), 5, 22);
    assert_eq!(d.message, "bad duration `5`: add a unit, e.g. `5s`");
}

#[test]
fn secrets_are_variable_names_listed_once() {
    let web = &valid(&service("    secrets: [DATABASE_URL, API_TOKEN]\n")).services["web"];
    assert_eq!(web.secrets, ["DATABASE_URL", "API_TOKEN"]);

    let d = single(&service("    secrets: [9KEY]\n"), 5, 15);
    assert_eq!(d.message, "bad secret name `9KEY`");
    assert_eq!(
        hint(&d),
        "secrets are environment variables: names use letters, digits and `_`, and do not start with a digit, e.g. `_9KEY`"
    );

    let d = single(&service("    secrets: [A, B, A]\n"), 5, 21);
    assert_eq!(d.message, "secret `A` is listed twice");
    assert_eq!(hint(&d), "remove one of them (the first is on line 5)");

    let d = single(&service("    secrets: DATABASE_URL\n"), 5, 14);
    assert_eq!(
        d.message,
        "`services.web.secrets` must be a list, not a string"
    );
    assert_eq!(
        hint(&d),
        "write it as a list: `secrets: [\"DATABASE_URL\"]`"
    );
}

#[test]
fn a_secret_is_not_also_set_in_env() {
    let source = service("    env: { DATABASE_URL: x, PLAIN: y }\n    secrets: [DATABASE_URL]\n");
    let d = single(&source, 5, 12);
    assert_eq!(
        d.message,
        "`DATABASE_URL` is set in `env` but is also a secret (line 6)"
    );
    assert_eq!(
        hint(&d),
        "a secret's value comes from the secret store; remove `DATABASE_URL` from `env`, or from `secrets` to keep this value"
    );
    // Each conflict is reported.
    let source = service("    env:\n      A: x\n      B: y\n    secrets: [B, A]\n");
    assert_eq!(
        positions(&source),
        vec![
            (
                6,
                7,
                "`A` is set in `env` but is also a secret (line 8)".to_owned()
            ),
            (
                7,
                7,
                "`B` is set in `env` but is also a secret (line 8)".to_owned()
            ),
        ]
    );
}
