"""Tempest plugin of octavia-dsr (entry point tempest.test_plugins: dsr).

Test code only: installed with the product so a DevStack gate finds it, but
no product module imports it (tempest is not a product requirement).
"""
