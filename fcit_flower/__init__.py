"""fcit-flower: federated continual instruction tuning (FCIT) and DISCO on Flower."""

from fcit_flower.cpu_kernels import pin_cpu_kernels

# Before any submodule loads torch: CPU numbers must not depend on the CPU type.
pin_cpu_kernels()

__version__ = "0.1.0"
