"""python -m vdsm_dhcp.agent: the agent program (as vdsm-dhcp-agent)."""
import signal
import sys

from vdsm_dhcp.agent.lifecycle import AGENT_SIGNALS

# before the slow imports: see agent/service.py
signal.pthread_sigmask(signal.SIG_BLOCK, AGENT_SIGNALS)

from vdsm_dhcp.agent.service import main  # noqa: E402

sys.exit(main())
