"""No credential in any launch file: gcloud's own login is the only authentication."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCANNED = [REPO / "launch", REPO / "tests" / "launch"]

# Each pattern is assembled from pieces so that this file does not match itself.
KEY_LIKE = {
    "PEM private key": "-----BEGIN" + r" [A-Z ]*PRIVATE KEY",
    "Google API key": "AI" + r"za[0-9A-Za-z_\-]{35}",
    "OAuth access token": "ya" + r"29\.[0-9A-Za-z_\-]{20,}",
    "service-account key JSON": r'"type"\s*:\s*"service_' + r'account"',
    "private_key field": r'"private_' + r'key(_id)?"\s*:',
    "AWS access key id": "AK" + r"IA[0-9A-Z]{16}",
    "gcloud credential flag or variable": "|".join([
        "--access-token" + "-file", "--impersonate-service" + "-account", "--acc" + "ount=",
        "GOOGLE_APPLICATION" + "_CREDENTIALS", "CLOUDSDK_AUTH" + "_ACCESS_TOKEN"]),
}


def key_like_findings(paths) -> list[str]:
    findings = []
    for root in paths:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            findings += [f"{path}: {what}" for what, pattern in KEY_LIKE.items()
                         if re.search(pattern, text)]
    return findings


def test_launch_files_hold_no_credentials():
    assert all(root.is_dir() for root in SCANNED)
    assert key_like_findings(SCANNED) == []


@pytest.mark.parametrize("planted", [
    "-----BEGIN" + " RSA PRIVATE KEY-----\nMIIE...",
    'key = "AI' + 'za' + "A" * 35 + '"',
    '{"type": "service_' + 'account", "private_' + 'key": "x"}',
    "gcloud auth --access-token" + "-file=/tmp/t",
    "export GOOGLE_APPLICATION" + "_CREDENTIALS=/k.json",
])
def test_the_scan_finds_a_planted_credential(tmp_path, planted):
    (tmp_path / "leak.py").write_text(planted)
    assert key_like_findings([tmp_path])
