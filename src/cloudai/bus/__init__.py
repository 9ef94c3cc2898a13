"""The message bus between gateways and the master (docs/SCALING.md).

``subjects`` names things, ``codec`` encodes them (both pure); ``base.Bus`` is the small
interface the gateway and the master use; ``nats_bus.NatsBus`` implements it on NATS.
"""
