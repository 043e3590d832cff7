"""Interop with Mosquitto's command-line clients, mosquitto_pub and mosquitto_sub."""

import shutil
import subprocess

import pytest

CLI_VERSIONS = pytest.mark.parametrize("cli_version", ["mqttv311", "mqttv5"])


def cli(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: apt-get install mosquitto-clients"
    return path


def mosquitto_pub(broker, *args: str) -> None:
    command = [cli("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), *args]
    result = subprocess.run(command, capture_output=True, timeout=20)
    assert result.returncode == 0, f"{command} failed: {result.stderr.decode()}"


class Sub:
    """mosquitto_sub running in debug mode, so we know when its SUBACK has arrived."""

    def __init__(self, broker, *args: str):
        # stdbuf: line-buffered stdout, or the SUBACK debug line only shows up when it exits.
        command = [
            cli("stdbuf"),
            "-oL",
            cli("mosquitto_sub"),
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-d",
            "-W",
            "15",
            *args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "received SUBACK" in line:
                return
        raise AssertionError(f"mosquitto_sub exited before subscribing: {self.lines}")

    def output(self) -> list[str]:
        """Wait for the process to exit (-C count reached) and return all its lines."""
        # Keep reading through the same text wrapper: communicate() would bypass its read-ahead
        # buffer and lose lines. mosquitto_sub's -W bounds how long this can take.
        self.lines += [line.rstrip("\n") for line in self.process.stdout]
        self.process.wait(timeout=20)
        assert self.process.returncode == 0, f"mosquitto_sub exited with {self.process.returncode}: {self.lines}"
        return self.lines


@CLI_VERSIONS
def test_mosquitto_sub_receives_what_mosquitto_pub_sends(broker, uid, cli_version):
    topic = f"{uid}/cli"
    sub = Sub(broker, "-V", cli_version, "-t", topic, "-C", "1")
    mosquitto_pub(broker, "-V", cli_version, "-t", topic, "-m", f"hello {uid}")
    assert f"hello {uid}" in sub.output()


@CLI_VERSIONS
def test_mosquitto_sub_gets_message_retained_by_mosquitto_pub(broker, uid, cli_version):
    topic = f"{uid}/cli/retained"
    mosquitto_pub(broker, "-V", cli_version, "-t", topic, "-m", f"kept {uid}", "-r", "-q", "1")
    sub = Sub(broker, "-V", cli_version, "-t", topic, "-C", "1", "-v")
    lines = sub.output()
    assert f"{topic} kept {uid}" in lines
    assert any("received PUBLISH (d0, q0, r1" in line for line in lines), f"retain flag not set: {lines}"
    mosquitto_pub(broker, "-V", cli_version, "-t", topic, "-n", "-r")  # clear it


@CLI_VERSIONS
def test_qos2_from_mosquitto_pub_reaches_mosquitto_sub_at_qos2(broker, uid, cli_version):
    topic = f"{uid}/cli/qos2"
    sub = Sub(broker, "-V", cli_version, "-t", topic, "-C", "1", "-q", "2")
    mosquitto_pub(broker, "-V", cli_version, "-t", topic, "-m", "exactly once", "-q", "2")
    lines = sub.output()
    assert "exactly once" in lines
    assert any("received PUBLISH (d0, q2" in line for line in lines), f"not delivered at QoS 2: {lines}"
    assert any("sending PUBCOMP" in line for line in lines), f"QoS 2 flow incomplete: {lines}"


@CLI_VERSIONS
def test_paho_and_command_line_clients_interoperate(broker, peers, uid, cli_version):
    topic = f"{uid}/mixed"
    paho = peers("paho").connect()
    paho.subscribe((f"{topic}/to-paho", 1))
    sub = Sub(broker, "-V", cli_version, "-t", f"{topic}/to-cli", "-C", "1", "-q", "1")
    paho.publish(f"{topic}/to-cli", b"from paho", qos=1)
    mosquitto_pub(broker, "-V", cli_version, "-t", f"{topic}/to-paho", "-m", "from cli", "-q", "1")
    assert "from paho" in sub.output()
    message = paho.expect_message(f"{topic}/to-paho")
    assert (message.payload, message.qos) == (b"from cli", 1)
