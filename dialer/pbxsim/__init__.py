"""A PBX simulator speaking Asterisk 22's AMI: the dialer's test peer, demo PBX and load target.

Modelled on real Asterisk sessions (shared/ami-transcripts): the same frames, header order,
Originate results, channel naming, Uniqueid/Linkedid rules and Q.850 causes, with callees whose
behaviour is chosen by the last two digits of the dialled number. It serves TLS when given a
certificate, answers MD5 challenge logins, and can be given a capacity past which it behaves
as a CPU-bound Asterisk (`capacity`). Its call queues serve waiting callers with free members;
an agent model (`AgentModel`) gives agents random answer, talk and wrap-up times and callees a
patience, and `agent_count` starts every queue with agents PJSIP/agent1..N.

    async with PbxSimulator(SimConfig(port=0, speed=50)) as sim:
        ...  # connect to sim.host, sim.port

    sim = start_in_thread(port=0, speed=50)   # from synchronous code; sim.stop() at the end
    sim = start_in_thread(port=0, speed=20, agents=AgentModel(talk=90), agent_count=10)
    ["dialer", "pbx-sim", *cli_args(AgentModel(talk=90), 10)]   # the same as a process
                                              # (cli_args: dialer.pbxsim.agents)

Modules, bottom to top (each imports only from the layers before it; imports for type hints
alone, under `if TYPE_CHECKING:`, aside): codes, wire, filters, dialplan, queues, capacity >
behaviour, channels, record > config, events > agents, engine > parties > legs > ivr, transfers,
queue_callers > calls > call_actions, channel_actions, queue_actions, dialplan_actions > actions >
session > server > this package (tests/test_import_layers.py checks there is no circle).
"""

from dialer.pbxsim.agents import AgentModel
from dialer.pbxsim.behaviour import Callee, Timings, callee_for
from dialer.pbxsim.config import ConfigError, SimConfig
from dialer.pbxsim.dialplan import Context, Dialplan, Role
from dialer.pbxsim.record import read_records
from dialer.pbxsim.server import PbxSimulator, SimulatorThread, start_in_thread

__all__ = [
    "AgentModel",
    "Callee",
    "ConfigError",
    "Context",
    "Dialplan",
    "PbxSimulator",
    "Role",
    "SimConfig",
    "SimulatorThread",
    "Timings",
    "callee_for",
    "read_records",
    "start_in_thread",
]
