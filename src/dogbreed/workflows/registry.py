"""Push the images to a registry (``make push``).

- Amazon ECR (the default): the registry is ``ACCOUNT.dkr.ecr.REGION.amazonaws.com``
  (the account from STS when not given). Each repository is created when
  missing, with scan-on-push; Docker logs in with an ECR authorization token.
- Any other registry (``--registry HOST[:PORT][/PATH]``): tag and push.

A missing Docker engine, missing AWS credentials or a missing region each end
in a one-line error. An image built on a stand-in base (``make base-image``
without a registry: labelled ``dogbreed.base.stand-in``) is pushed with a
warning first: it was not built on the pinned base image.

    dogbreed registry push --image dogbreed-train:abc123 --image dogbreed-serve:abc123 \\
        [--registry 127.0.0.1:5000] [--region eu-west-1] [--account 123456789012] [--latest]
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
from dataclasses import dataclass

from dogbreed import settings, workflows
from dogbreed.errors import DogbreedError, run_cli
from dogbreed.workflows.aws import CloudError, client_error_message, open_session

STAND_IN_FORMAT = '{{index .Config.Labels "dogbreed.base.stand-in"}}'
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class PushError(DogbreedError):
    pass


@dataclass
class Login:
    username: str
    password: str
    endpoint: str


def docker(*args: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise PushError("docker is not installed") from None
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PushError(f"docker {args[0]} failed: {message}")
    return result.stdout


def check_engine() -> None:
    problem = workflows.docker_engine_problem()
    if problem:
        raise PushError(f"no Docker engine is running ({problem})")


def split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


def ensure_repository(ecr, name: str, account: str) -> str:
    """The repository's URI in ``account``'s registry; created with scan-on-push when missing."""
    try:
        found = ecr.describe_repositories(registryId=account, repositoryNames=[name])
        return found["repositories"][0]["repositoryUri"]
    except ecr.exceptions.RepositoryNotFoundException:
        created = ecr.create_repository(
            registryId=account, repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )
        return created["repository"]["repositoryUri"]


def ecr_login(ecr, account: str) -> Login:
    data = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Login(username, password, data["proxyEndpoint"])


def aws_clients(region: str | None):
    try:
        session = open_session(region, region_settings="REGION (make) or --region, AWS_REGION or AWS_DEFAULT_REGION")
    except CloudError as exc:
        raise PushError(str(exc)) from None
    return session.client("ecr"), session.client("sts"), session.region_name


def push_images(images: list[str], target_for, latest: bool) -> list[str]:
    pushed = []
    for image in images:
        name, tag = split_image(image)
        repository = target_for(name)
        for remote_tag in [tag] + (["latest"] if latest and tag != "latest" else []):
            remote = f"{repository}:{remote_tag}"
            docker("tag", image, remote)
            docker("push", remote)
            pushed.append(remote)
            print(f"pushed {remote}", flush=True)
    return pushed


def push(
    images: list[str], registry: str | None, region: str | None, account: str | None, latest: bool, clients=None
) -> list[str]:
    check_engine()
    for image in images:
        # Fails with a clear message when the image was never built.
        stand_in = docker("image", "inspect", "--format", STAND_IN_FORMAT, image).strip()
        if stand_in and stand_in != "<no value>":
            print(
                f"warning: {image} was built on a stand-in base image ({stand_in}); rebuild it where a registry "
                "answers (make base-image build) before it serves production traffic",
                file=sys.stderr,
                flush=True,
            )
    ecr_match = ECR_HOST.match(registry) if registry else None
    if registry and not ecr_match:
        return push_images(images, lambda name: f"{registry}/{name}", latest)

    import botocore.exceptions

    try:
        ecr, sts, region = clients or aws_clients(region or (ecr_match.group(2) if ecr_match else None))
        account = account or (ecr_match.group(1) if ecr_match else None) or sts.get_caller_identity()["Account"]
        login = ecr_login(ecr, account)
        docker("login", "--username", login.username, "--password-stdin", login.endpoint, stdin=login.password)
        return push_images(images, lambda name: ensure_repository(ecr, name, account), latest)
    except botocore.exceptions.ClientError as exc:
        raise PushError(client_error_message(exc)) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise PushError(f"AWS call failed: {exc}") from None


def get_args_parser(prog: str = "dogbreed registry") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("push")
    p.add_argument("--image", action="append", required=True, help="local image NAME:TAG; repeat for several")
    p.add_argument(
        "--registry",
        default=settings.text("REGISTRY"),
        help="any registry HOST[:PORT][/PATH]; default: ECR of --account and --region",
    )
    p.add_argument("--region")
    p.add_argument("--account")
    p.add_argument("--latest", action="store_true", help="also push the tag 'latest'")
    return parser


def run(argv: list[str] | None = None, prog: str = "dogbreed registry") -> int:
    """Errors are reported as ``push: error: ...``, as make push reports them."""
    args = get_args_parser(prog).parse_args(argv)
    return run_cli("push", lambda: push(args.image, args.registry, args.region, args.account, args.latest))
