"""The tasks service (``containerd.services.tasks.v1.Tasks``)."""

# The id of the io.containerd.service.v1 plugin (containerd's services.TasksService).
TASKS_SERVICE = "tasks-service"
