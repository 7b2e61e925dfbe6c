"""The ``dbmaint`` command: a client of the manager's MaintenanceService, the health probe and the demo."""
