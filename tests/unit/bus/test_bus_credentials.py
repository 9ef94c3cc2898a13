"""The bus credential of the master and a gateway (docs/SCALING.md, "Identity and
security"): secure mode refuses to start without one (one line, exit status 2); an NKey
seed file must be private; a URL's password never appears in what is logged."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloudai.bus.auth import redact_url, shown_servers, url_has_credentials
from cloudai.bus.nats_bus import NatsBus
from cloudai.gateway import cli as gateway_cli
from cloudai.gateway.server import GatewayServer
from cloudai.gateway.settings import GatewaySettings
from cloudai.master import cli as master_cli
from cloudai.master.settings import MasterSettings
from cloudai.settings import SettingsError

SEED = "SUAMBA4TDTMDPIFMGQF2RRDB5LK75G4FMEPJU27UJY2KYKXZOQEBJNJH3A"  # a user NKey's seed
NO_CREDENTIAL = "connects to the bus only with a credential: --bus-nkey FILE"


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    (master_cli if command == "master" else gateway_cli).register(subparsers)
    return parser.parse_args([command, *argv])


def seed_file(tmp_path: Path, mode: int = 0o600, text: str = SEED + "\n") -> Path:
    path = tmp_path / "bus.nk"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_secure_master_with_a_bus_and_no_credential_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert master_cli.run(parse("master", "--bus", "nats://10.0.0.1:4222", "--no-cli")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cloudai master: ")
    assert f"a secure master {NO_CREDENTIAL}" in err and "or --insecure" in err


def test_a_secure_gateway_without_a_credential_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert gateway_cli.run(parse("gateway", "--tls-dir", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cloudai gateway: ")
    assert f"a secure gateway {NO_CREDENTIAL}" in err


@pytest.mark.parametrize(
    "bus",
    [
        "nats://gw:pw@10.0.0.1:4222",  # user and password
        "nats://s3cret-token@10.0.0.1:4222",  # a token
        "nats://a:1@10.0.0.1:4222,tls://b:2@10.0.0.2:4222",  # in every URL
    ],
)
def test_credentials_in_the_url_are_enough(bus: str, tmp_path: Path) -> None:
    assert MasterSettings.load(bus=bus).bus == bus
    assert GatewaySettings.load(bus=bus, tls_dir=tmp_path).bus == bus


def test_a_url_list_where_one_lacks_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=NO_CREDENTIAL):
        GatewaySettings.load(bus="nats://a:1@h1:4222,nats://h2:4222", tls_dir=tmp_path)


def test_an_nkey_seed_file_is_a_credential_from_flags_env_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = seed_file(tmp_path)
    args = parse("master", "--bus", "nats://h:4222", "--bus-nkey", str(seed))
    assert master_cli.settings_from_args(args).bus_nkey == seed
    args = parse("gateway", "--tls-dir", str(tmp_path), "--bus-nkey", str(seed))
    assert gateway_cli.settings_from_args(args).bus_nkey == seed
    monkeypatch.setenv("CLOUDAI_BUS_NKEY", str(seed))
    assert GatewaySettings.load(tls_dir=tmp_path).bus_nkey == seed
    config = tmp_path / "config.toml"
    config.write_text(f'[master]\nbus = "nats://h:4222"\nbus-nkey = "{seed}"\n')
    monkeypatch.delenv("CLOUDAI_BUS_NKEY")
    monkeypatch.setenv("CLOUDAI_CONFIG", str(config))
    assert MasterSettings.load().bus_nkey == seed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_seed_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    seed = seed_file(tmp_path, mode)
    with pytest.raises(SettingsError) as refused:
        MasterSettings.load(bus="nats://h:4222", bus_nkey=seed)
    assert str(refused.value).endswith(
        f"--bus-nkey {seed} is readable by others (mode {mode:o}); chmod 600 it"
    )
    # Even where no credential is needed: the key is exposed all the same.
    with pytest.raises(SettingsError, match="readable by others"):
        GatewaySettings.load(insecure=True, bus_nkey=seed)


def test_a_missing_or_wrong_seed_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read --bus-nkey .*: No such file"):
        GatewaySettings.load(tls_dir=tmp_path, bus_nkey=tmp_path / "none.nk")
    public_key = "UD4E773CJ6IVBMBR5IC6CA45V3PANZE236OX2JXHTAYH5FV5DX4GDNT7"
    for text in (public_key, "", SEED[:-3], "SA" + SEED[2:]):  # an account's seed: SA...
        wrong = seed_file(tmp_path, text=text)
        with pytest.raises(SettingsError, match="does not hold a user NKey seed"):
            GatewaySettings.load(tls_dir=tmp_path, bus_nkey=wrong)
        wrong.unlink()


def test_a_creds_file_must_be_private_too_and_not_with_an_nkey(tmp_path: Path) -> None:
    creds = tmp_path / "bus.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    creds.chmod(0o644)
    with pytest.raises(SettingsError, match=r"--bus-creds .* is readable by others"):
        MasterSettings.load(bus="nats://h:4222", bus_creds=creds)
    creds.chmod(0o600)
    assert MasterSettings.load(bus="nats://h:4222", bus_creds=creds).bus_creds == creds
    with pytest.raises(SettingsError, match="--bus-creds and --bus-nkey: give one of them"):
        MasterSettings.load(bus="nats://h:4222", bus_creds=creds, bus_nkey=seed_file(tmp_path))


def test_insecure_and_bus_less_processes_need_no_credential(tmp_path: Path) -> None:
    assert MasterSettings.load().bus is None  # no bus: nothing to check
    assert MasterSettings.load(bus="nats://h:4222", insecure=True).bus_nkey is None
    assert GatewaySettings.load(insecure=True).bus == "nats://127.0.0.1:4222"


def test_the_bus_is_built_with_the_credential(tmp_path: Path) -> None:
    seed = seed_file(tmp_path)
    settings = GatewaySettings.load(bus="nats://h1:4222,h2:4222", bus_nkey=seed, tls_dir=tmp_path)
    bus = NatsBus.from_settings(settings, name="g1")
    assert bus.servers == ["nats://h1:4222", "nats://h2:4222"]
    assert bus._nkey == seed and bus._creds is None
    assert bus.inbox_prefix is None  # NATS's _INBOX: the master's


def test_a_gateway_asks_on_its_own_inbox() -> None:
    settings = GatewaySettings.load(gateway_id="gw-2.example", insecure=True, bus_prefix="prod")
    server = GatewayServer.from_settings(settings)
    assert isinstance(server.bus, NatsBus)
    assert server.bus.inbox_prefix == "_INBOX.prod.gw.gw-2%2Eexample"


@pytest.mark.parametrize("gateway_id", ["", "bad id", "g>", "-g"])
def test_a_gateway_id_that_breaks_the_id_rule_is_one_line(gateway_id: str) -> None:
    with pytest.raises(SettingsError, match="gateway id") as refused:
        GatewaySettings.load(gateway_id=gateway_id, insecure=True)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://gw:pa55@10.0.0.1:4222", "nats://gw:***@10.0.0.1:4222"),
        ("tls://s3cret@nats.example:4222", "tls://***@nats.example:4222"),
        ("nats://gw:p%40ss@[::1]:4222", "nats://gw:***@[::1]:4222"),
        ("nats://10.0.0.1:4222", "nats://10.0.0.1:4222"),
    ],
)
def test_urls_are_shown_without_their_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert url_has_credentials(url) == (url != shown)
    assert shown_servers([url, "nats://h:1"]) == f"{shown}, nats://h:1"
