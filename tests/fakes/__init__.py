"""Stand-ins for services outside the process (only the LLM server is ever faked), speaking their
real protocols over loopback. `from tests.fakes.openai_server import fake_llm` to use one."""
