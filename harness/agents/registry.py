"""Choose an agent backend by name. Backends are imported only when chosen, so a missing
optional client (anthropic SDK, aider, claude) never breaks the others."""

from __future__ import annotations

from pathlib import Path

from harness.agents.base import Agent
from harness.config import AgentSettings
from harness.errors import ConfigError

AGENTS = ("offline", "command", "claude", "anthropic", "aider")


def make_agent(settings: AgentSettings, archive_dir: Path) -> Agent:
    name = settings.name
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}", hint=f"choose one of: {', '.join(AGENTS)}")
    if name == "offline":
        from harness.agents.offline import OfflineAgent
        return OfflineAgent()
    if name == "command":
        if not settings.command:
            raise ConfigError("--agent command needs --agent-command 'CMD'", hint="e.g. --agent-command './my_agent.sh'")
        from harness.agents.command import CommandAgent
        return CommandAgent(settings.command, timeout_s=settings.timeout_s)
    from harness.caps import Caps, open_session
    from harness.llmlog import LlmLog
    # The night's session: a loop started again after Ctrl-C or kill -9 counts what it spent.
    session = open_session(Path(archive_dir))
    log = LlmLog.in_archive(archive_dir, session)
    caps = Caps.from_log(log.path, session, settings.max_cost, settings.max_tokens)
    if name == "claude":
        from harness.agents.claude import ClaudeCodeAgent
        return ClaudeCodeAgent(settings, log, caps)
    if name == "anthropic":
        from harness.agents.anthropic_api import AnthropicAgent
        return AnthropicAgent(settings, log, caps)
    from harness.agents.aider import AiderAgent
    return AiderAgent(settings, log, caps)

