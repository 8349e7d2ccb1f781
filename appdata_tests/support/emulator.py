"""An emulator process of a test's own, to kill and restart on its state directory."""

from __future__ import annotations

import dataclasses
import signal
import subprocess

from appdata import aws
from appdata.config import AwsEndpoints, Settings, aws_client_kwargs
from appdata.local.emulator import EmulatorServer, free_port, wait_until_up


class KinesisProcess:
    """One emulator process serving Kinesis on a state directory, killed with SIGKILL (no snapshot,
    no cleanup) and started again on the same directory, as a crash and a restart do."""

    def __init__(self, state_dir, settings: Settings):
        self.server = EmulatorServer("127.0.0.1", free_port(), ("kinesis",))
        self.state_dir, self.settings = state_dir, settings
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.server.command(self.state_dir), stdout=subprocess.PIPE, text=True)
        started = self.proc.stdout.readline()  # the start-up line, once state is loaded
        wait_until_up(self.server.endpoint)
        return started

    def stop(self) -> None:
        """SIGTERM: the emulator finishes its request and writes its snapshot."""
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()

    def client(self):
        endpoints = AwsEndpoints(s3=None, kinesis=self.server.endpoint, dynamodb=None, others=None)
        return aws.client("kinesis", **aws_client_kwargs(dataclasses.replace(self.settings, aws_endpoints=endpoints),
                                                         "kinesis"))
