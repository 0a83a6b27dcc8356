"""deploy/template.yaml: valid for cfn-lint, and granting exactly the loaders' IAM actions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"

# What each built-in loader calls, as docs/deployment.md lists it.
LOADER_ACTIONS = {
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "kms:Decrypt",
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:DescribeTable",
    "s3:GetObject",
    "appconfig:StartConfigurationSession",
    "appconfig:GetLatestConfiguration",
}
# IAM's service prefix -> botocore's service holding those operations.
SERVICES = {"appconfig": "appconfigdata"}


def _cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    assert executable is not None, "cfn-lint is in the test dependency group"
    return subprocess.run(
        [executable, str(template)], capture_output=True, text=True, timeout=300, check=False
    )


def _statements() -> list[Any]:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(TEMPLATE))
    function = template["Resources"]["Function"]["Properties"]
    return [statement for policy in function["Policies"] for statement in policy["Statement"]]


def test_cfn_lint_accepts_the_template() -> None:
    result = _cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_would_refuse_a_broken_one(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text()
    broken.write_text(text.replace("AWS::Serverless::Function", "AWS::Serverless::Functon"))
    result = _cfn_lint(broken)
    assert result.returncode != 0
    assert "AWS::Serverless::Functon" in result.stdout


def test_the_policy_grants_the_loaders_actions_and_no_more() -> None:
    granted: set[str] = set()
    for statement in _statements():
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        granted.update([actions] if isinstance(actions, str) else actions)
        # A wildcard resource only where the action has no resource-level permissions.
        if statement["Resource"] == "*":
            assert actions == "secretsmanager:BatchGetSecretValue"
    assert granted == LOADER_ACTIONS
    documented = (ROOT / "docs" / "deployment.md").read_text()
    assert all(f"`{action}`" in documented for action in LOADER_ACTIONS)


@pytest.mark.parametrize("action", sorted(LOADER_ACTIONS))
def test_every_action_is_a_real_operation(action: str) -> None:
    # cfn-lint does not check the action names of a SAM inline policy; botocore knows them.
    prefix, _, operation = action.partition(":")
    model = botocore.session.get_session().get_service_model(SERVICES.get(prefix, prefix))
    assert operation in model.operation_names
