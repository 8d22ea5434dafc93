//! The emulated device (host buffers, reference kernels): buffers, launches in place, and the
//! errors of launches that do not fit their buffers.

use sched_kernels::builder::KernelBuilder;
use sched_kernels::spec::{BinaryOp, NoiseLaunch};
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::{BufferId, Device, DeviceError, DeviceOp, Launch};

#[test]
fn buffers_launch_in_place_and_report_errors() {
    let device = EmulatedDevice::new();
    let x = device.upload(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("uploads");
    let y = device.upload(&[0.5; 5]).expect("uploads");
    let mut b = KernelBuilder::new();
    let (xi, yi, p) = (b.input(0), b.input(1), b.param(0));
    let py = b.binary(BinaryOp::Mul, p, yi);
    let out = b.binary(BinaryOp::Add, xi, py);
    b.output(out);
    let kernel = b.finish();
    let noise = NoiseLaunch { seed: 0, per_sample: 1, slots: &[] };
    // In place: the output is input 0's buffer.
    let launch = Launch { len: 5, inputs: &[x, y], outputs: &[x], params: &[2.0], noise };
    device.execute(&DeviceOp::elementwise(&kernel, &launch)).expect("runs");
    assert_eq!(device.download(x).expect("downloads"), vec![2.0, 3.0, 4.0, 5.0, 6.0]);
    // A fresh buffer is NaN until written, so reading one early shows.
    let fresh = device.alloc(2).expect("allocates");
    assert!(device.download(fresh).expect("downloads").iter().all(|v| v.is_nan()));

    let short = Launch { len: 6, ..launch };
    let error = device.execute(&DeviceOp::elementwise(&kernel, &short)).expect_err("buffers hold 5 elements");
    assert!(matches!(error, DeviceError::Buffer { .. }), "{error}");
    let missing = Launch { inputs: &[x, BufferId(999)], ..launch };
    let error = device.execute(&DeviceOp::elementwise(&kernel, &missing)).expect_err("buffer 999 does not exist");
    assert_eq!(error.to_string(), "buffer 999 does not exist on the device");
    let wrong_params = Launch { params: &[], ..launch };
    assert!(device.execute(&DeviceOp::elementwise(&kernel, &wrong_params)).is_err());
    for buffer in [x, y, fresh] {
        device.free(buffer);
    }
    assert_eq!(device.live_buffers(), 0);
}
