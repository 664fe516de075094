"""The lab kit: network-namespace topology (netns), BIRD router (bird), test
servers (servers), an SE agent in a namespace (agent_lab), the whole product
through a local Octavia (product_lab, localstack) and a traffic loop.

Imported by tools/, bench/ and tests/; nothing here imports tests/."""
